//! Overlay hardware addresses: every overlay interface's MAC is derived from its IPv4 address,
//! so neighbour and FDB entries can be written from the discovery feed's IPs alone.

use std::net::Ipv4Addr;

/// First two bytes of every overlay MAC; only entries with this prefix are ever removed.
const OVERLAY_MAC_PREFIX: [u8; 2] = [0x02, 0x42];

/// The deterministic MAC of the overlay interface owning `ip`: `02:42` followed by the four
/// address bytes (as Docker does), so a node can fill neighbour and FDB tables from IPs alone.
pub fn mac_for_ip(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [OVERLAY_MAC_PREFIX[0], OVERLAY_MAC_PREFIX[1], a, b, c, d]
}

pub(crate) fn is_overlay_mac(mac: &[u8]) -> bool {
    mac.len() == 6 && mac.starts_with(&OVERLAY_MAC_PREFIX)
}

/// `aa:bb:cc:dd:ee:ff`.
pub(crate) fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
