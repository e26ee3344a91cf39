//! The cross-node ingress overlay: a VXLAN port on the node's bridge, fed static FDB and
//! neighbour entries.
//!
//! Nothing is learned or flooded: the VXLAN device has no default remote (no group, no
//! `remote`), `nolearning`, and `proxy` so ARP requests from the bridge are answered locally
//! from its neighbour table and never leave the node. An overlay IP is reachable on a remote
//! node exactly while [`reconcile_overlay`] has entries for it: its neighbour entry (IP to
//! [`mac_for_ip`]) on the VXLAN device and on the bridge, and an FDB entry (MAC to the remote
//! VTEP) on the VXLAN device.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};

use crate::error::{netlink_errno, NetError};
use crate::link::{find_link, link_kind, link_mtu, require_link, validate_link_name, with_netlink};
use crate::mac::{format_mac, is_overlay_mac, mac_for_ip};

/// The IANA VXLAN UDP port, the usual [`OverlaySpec::port`].
pub const DEFAULT_VXLAN_PORT: u16 = 4789;

/// Bytes VXLAN over IPv4 adds to an inner Ethernet payload: outer IPv4 (20), UDP (8),
/// VXLAN (8) and the inner Ethernet header (14).
const VXLAN_OVERHEAD: u32 = 50;

/// Underlay MTU assumed when no local link carries [`OverlaySpec::local`].
const DEFAULT_UNDERLAY_MTU: u32 = 1500;

/// This node's VXLAN port of the overlay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlaySpec {
    /// Device name (at most 15 bytes), e.g. `"shoal-vx0"`.
    pub vxlan: String,
    /// VXLAN network identifier; every node of the overlay must use the same one.
    pub vni: u32,
    /// This node's underlay address: the source of encapsulated packets (the VTEP).
    pub local: Ipv4Addr,
    /// UDP port, sent to and listened on; usually [`DEFAULT_VXLAN_PORT`].
    pub port: u16,
    /// Bridge the device is attached to as a port; must exist (see [`crate::ensure_bridge`]).
    pub bridge: String,
}

/// The overlay entries [`reconcile_overlay`] manages, as the kernel currently has them: only
/// permanent neighbours and `self` FDB entries whose MAC starts with `02:42`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OverlayEntries {
    /// Neighbours on the VXLAN device (answered by its ARP proxy): IP to MAC.
    pub vxlan_neighbours: BTreeMap<Ipv4Addr, [u8; 6]>,
    /// Neighbours on the bridge (used by the node's own stack): IP to MAC.
    pub bridge_neighbours: BTreeMap<Ipv4Addr, [u8; 6]>,
    /// FDB entries on the VXLAN device: (MAC, remote VTEP).
    pub fdb: BTreeSet<([u8; 6], Ipv4Addr)>,
}

/// Create the VXLAN device `spec.vxlan` if absent (VNI, local VTEP, UDP port, `nolearning`,
/// `proxy`, no L2/L3 miss notifications, no default remote), attach it to `spec.bridge` and
/// bring it up.
///
/// Its MTU is the MTU of the link holding `spec.local` minus the 50 bytes of encapsulation
/// (1450 if no link holds it), so encapsulated packets are never fragmented. Create it before
/// the node's tasks: the bridge's MTU drops to the VXLAN device's, and new task veths copy
/// the bridge's MTU.
///
/// Idempotent. A device of that name with other parameters (or of another kind) is deleted
/// and recreated, which drops its FDB and neighbour entries: run [`reconcile_overlay`] after.
pub async fn ensure_vxlan(spec: &OverlaySpec) -> Result<(), NetError> {
    validate_link_name(&spec.vxlan)?;
    validate_link_name(&spec.bridge)?;
    let op = &format!(
        "ensure vxlan {} (vni {}, local {}, port {}) on bridge {}",
        spec.vxlan, spec.vni, spec.local, spec.port, spec.bridge
    );
    with_netlink(op, |handle| async move {
        let bridge = require_link(&handle, op, &spec.bridge).await?;
        let mtu = underlay_mtu(&handle, spec.local)
            .await
            .map_err(|e| NetError::netlink(format!("{op}: find underlay mtu"), e))?
            .unwrap_or(DEFAULT_UNDERLAY_MTU)
            .saturating_sub(VXLAN_OVERHEAD);
        let existing = find_link(&handle, &spec.vxlan)
            .await
            .map_err(|e| NetError::netlink(op, e))?;
        if let Some(link) = existing {
            let index = link.header.index;
            if link_kind(&link).as_deref() == Some("vxlan")
                && vxlan_matches(&vxlan_infos(&link), spec)
            {
                let attached = link.attributes.contains(&LinkAttribute::Controller(bridge));
                if !attached
                    || !link.header.flags.contains(LinkFlags::Up)
                    || link_mtu(&link) != Some(mtu)
                {
                    let change = LinkUnspec::new_with_index(index)
                        .controller(bridge)
                        .mtu(mtu)
                        .up()
                        .build();
                    handle.link().change(change).execute().await.map_err(|e| {
                        NetError::netlink(format!("{op}: attach to bridge, set mtu {mtu}, up"), e)
                    })?;
                }
                return Ok(());
            }
            tracing::info!(vxlan = %spec.vxlan, "vxlan device differs from spec; recreating");
            match handle.link().del(index).execute().await {
                Ok(()) => {}
                Err(e) if netlink_errno(&e) == Some(libc::ENODEV) => {}
                Err(e) => return Err(NetError::netlink(format!("{op}: delete old device"), e)),
            }
        }
        let vxlan = LinkVxlan::new(&spec.vxlan, spec.vni)
            .local(spec.local)
            .port(spec.port)
            .learning(false)
            .proxy(true)
            .l2miss(false)
            .l3miss(false)
            .mtu(mtu)
            .controller(bridge)
            .up()
            .build();
        handle
            .link()
            .add(vxlan)
            .execute()
            .await
            .map_err(|e| NetError::netlink(op, e))?;
        tracing::debug!(vxlan = %spec.vxlan, vni = spec.vni, "created vxlan device");
        Ok(())
    })
    .await
}

/// Make the overlay's static entries equal to `peers` (overlay IP to the VTEP of the node
/// that owns it; never this node's own IPs).
///
/// For every peer: a permanent neighbour `ip -> mac_for_ip(ip)` on `vxlan` and on `bridge`,
/// and a permanent `self` FDB entry `mac_for_ip(ip) -> vtep` on `vxlan`. Managed entries
/// (permanent, MAC starting with `02:42`) that are not wanted any more are deleted; all
/// other entries are left alone. Idempotent: entries already right are not rewritten.
pub async fn reconcile_overlay(
    vxlan: &str,
    bridge: &str,
    peers: &BTreeMap<Ipv4Addr, Ipv4Addr>,
) -> Result<(), NetError> {
    let op = &format!("reconcile overlay on {vxlan} and bridge {bridge}");
    with_netlink(op, |handle| async move {
        let vx = require_link(&handle, op, vxlan).await?;
        let br = require_link(&handle, op, bridge).await?;
        let current = dump_entries(&handle, vx, br)
            .await
            .map_err(|e| NetError::netlink(format!("{op}: dump entries"), e))?;
        let want_neighbours: BTreeMap<Ipv4Addr, [u8; 6]> =
            peers.keys().map(|ip| (*ip, mac_for_ip(*ip))).collect();
        let want_fdb: BTreeSet<([u8; 6], Ipv4Addr)> = peers
            .iter()
            .map(|(ip, vtep)| (mac_for_ip(*ip), *vtep))
            .collect();

        // Add and replace first, then delete: a peer whose VTEP moved is updated in place.
        for &(mac, vtep) in want_fdb.difference(&current.fdb) {
            fdb_add(&handle, vx, mac, vtep)
                .await
                .map_err(|e| NetError::netlink(fdb_op("add", vxlan, mac, vtep), e))?;
        }
        for (index, name, have) in [
            (vx, vxlan, &current.vxlan_neighbours),
            (br, bridge, &current.bridge_neighbours),
        ] {
            for (&ip, &mac) in &want_neighbours {
                if have.get(&ip) != Some(&mac) {
                    neighbour_add(&handle, index, ip, mac)
                        .await
                        .map_err(|e| NetError::netlink(neigh_op("add", name, ip, mac), e))?;
                }
            }
            for (&ip, &mac) in have {
                if !want_neighbours.contains_key(&ip) {
                    ignore_enoent(neighbour_del(&handle, index, ip).await)
                        .map_err(|e| NetError::netlink(neigh_op("delete", name, ip, mac), e))?;
                }
            }
        }
        for &(mac, vtep) in current.fdb.difference(&want_fdb) {
            // ENOENT: the add above already replaced this remote.
            ignore_enoent(fdb_del(&handle, vx, mac, vtep).await)
                .map_err(|e| NetError::netlink(fdb_op("delete", vxlan, mac, vtep), e))?;
        }
        tracing::debug!(vxlan, peers = peers.len(), "overlay entries reconciled");
        Ok(())
    })
    .await
}

/// The managed overlay entries currently on `vxlan` and `bridge` (see [`OverlayEntries`]).
pub async fn overlay_entries(vxlan: &str, bridge: &str) -> Result<OverlayEntries, NetError> {
    let op = &format!("dump overlay entries of {vxlan} and bridge {bridge}");
    with_netlink(op, |handle| async move {
        let vx = require_link(&handle, op, vxlan).await?;
        let br = require_link(&handle, op, bridge).await?;
        dump_entries(&handle, vx, br)
            .await
            .map_err(|e| NetError::netlink(op, e))
    })
    .await
}

// === helpers ===

fn neigh_op(verb: &str, link: &str, ip: Ipv4Addr, mac: [u8; 6]) -> String {
    format!(
        "{verb} neighbour {ip} lladdr {} on {link}",
        format_mac(&mac)
    )
}

fn fdb_op(verb: &str, link: &str, mac: [u8; 6], vtep: Ipv4Addr) -> String {
    format!("{verb} fdb {} dst {vtep} on {link}", format_mac(&mac))
}

fn ignore_enoent(result: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match result {
        Err(e) if netlink_errno(&e) == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// MTU of the link that has the address `local`, if any.
async fn underlay_mtu(handle: &Handle, local: Ipv4Addr) -> Result<Option<u32>, rtnetlink::Error> {
    let mut addresses = handle.address().get().execute();
    let mut index = None;
    while let Some(msg) = addresses.try_next().await? {
        let has = msg.attributes.iter().any(|attr| {
            matches!(
                attr,
                AddressAttribute::Local(IpAddr::V4(ip)) | AddressAttribute::Address(IpAddr::V4(ip))
                    if *ip == local
            )
        });
        if has {
            index = Some(msg.header.index);
        }
    }
    let Some(index) = index else {
        return Ok(None);
    };
    let link = handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await?;
    Ok(link.as_ref().and_then(link_mtu))
}

pub(crate) fn vxlan_infos(link: &netlink_packet_route::link::LinkMessage) -> Vec<InfoVxlan> {
    link.attributes
        .iter()
        .filter_map(|attr| match attr {
            LinkAttribute::LinkInfo(infos) => Some(infos),
            _ => None,
        })
        .flatten()
        .filter_map(|info| match info {
            LinkInfo::Data(InfoData::Vxlan(data)) => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Whether the kernel's description of a VXLAN device matches `spec` and our fixed settings.
pub(crate) fn vxlan_matches(infos: &[InfoVxlan], spec: &OverlaySpec) -> bool {
    let required = [
        InfoVxlan::Id(spec.vni),
        InfoVxlan::Local(spec.local),
        InfoVxlan::Port(spec.port),
        InfoVxlan::Learning(false),
        InfoVxlan::Proxy(true),
        InfoVxlan::L2Miss(false),
        InfoVxlan::L3Miss(false),
    ];
    let forbidden = infos.iter().any(|info| {
        matches!(
            info,
            InfoVxlan::Group(_)
                | InfoVxlan::Group6(_)
                | InfoVxlan::Link(_)
                | InfoVxlan::CollectMetadata(true)
        )
    });
    !forbidden && required.iter().all(|want| infos.contains(want))
}

async fn dump_entries(
    handle: &Handle,
    vx: u32,
    br: u32,
) -> Result<OverlayEntries, rtnetlink::Error> {
    let mut entries = OverlayEntries::default();
    let mut neighbours = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute();
    while let Some(msg) = neighbours.try_next().await? {
        if msg.header.state != NeighbourState::Permanent {
            continue;
        }
        let (Some(ip), Some(mac)) = (destination_v4(&msg), overlay_lladdr(&msg)) else {
            continue;
        };
        if msg.header.ifindex == vx {
            entries.vxlan_neighbours.insert(ip, mac);
        } else if msg.header.ifindex == br {
            entries.bridge_neighbours.insert(ip, mac);
        }
    }
    let mut fdb = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute();
    while let Some(msg) = fdb.try_next().await? {
        let flags = msg.header.flags;
        if msg.header.ifindex != vx
            || !flags.contains(NeighbourFlags::Own)
            || flags.contains(NeighbourFlags::Controller)
        {
            continue;
        }
        if let (Some(mac), Some(vtep)) = (overlay_lladdr(&msg), destination_v4(&msg)) {
            entries.fdb.insert((mac, vtep));
        }
    }
    Ok(entries)
}

/// `NDA_DST` as IPv4 (AF_BRIDGE dumps carry it as raw bytes).
fn destination_v4(msg: &NeighbourMessage) -> Option<Ipv4Addr> {
    msg.attributes.iter().find_map(|attr| match attr {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
            <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(Ipv4Addr::from)
        }
        _ => None,
    })
}

/// `NDA_LLADDR` if it is an overlay MAC.
fn overlay_lladdr(msg: &NeighbourMessage) -> Option<[u8; 6]> {
    msg.attributes.iter().find_map(|attr| match attr {
        NeighbourAttribute::LinkLayerAddress(mac) if is_overlay_mac(mac) => {
            <[u8; 6]>::try_from(mac.as_slice()).ok()
        }
        _ => None,
    })
}

/// `ip neigh replace <ip> lladdr <mac> nud permanent dev <index>`.
async fn neighbour_add(
    handle: &Handle,
    index: u32,
    ip: Ipv4Addr,
    mac: [u8; 6],
) -> Result<(), rtnetlink::Error> {
    handle
        .neighbours()
        .add(index, IpAddr::V4(ip))
        .link_layer_address(&mac)
        .state(NeighbourState::Permanent)
        .replace()
        .execute()
        .await
}

/// `ip neigh del <ip> dev <index>`.
async fn neighbour_del(handle: &Handle, index: u32, ip: Ipv4Addr) -> Result<(), rtnetlink::Error> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = index;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    handle.neighbours().del(msg).execute().await
}

/// `bridge fdb replace <mac> dev <index> dst <vtep> self permanent`.
async fn fdb_add(
    handle: &Handle,
    index: u32,
    mac: [u8; 6],
    vtep: Ipv4Addr,
) -> Result<(), rtnetlink::Error> {
    handle
        .neighbours()
        .add_bridge(index, &mac)
        .flags(NeighbourFlags::Own)
        .state(NeighbourState::Permanent)
        .destination(IpAddr::V4(vtep))
        .replace()
        .execute()
        .await
}

/// `bridge fdb del <mac> dev <index> dst <vtep> self`: removes that remote only.
async fn fdb_del(
    handle: &Handle,
    index: u32,
    mac: [u8; 6],
    vtep: Ipv4Addr,
) -> Result<(), rtnetlink::Error> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.flags = NeighbourFlags::Own;
    msg.header.state = NeighbourState::Permanent;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            vtep,
        )));
    handle.neighbours().del(msg).execute().await
}
