//! [`TaskNetns`]: a task's network namespace with a veth pair onto the node's bridge.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::cidr::Ipv4Cidr;
use crate::error::NetError;
use crate::link::{
    add_address, delete_link, find_link, link_mtu, require_link, set_up, validate_link_name,
    with_netlink,
};
use crate::mac::mac_for_ip;
use crate::netns::{new_netns_async, run_in_netns_async};

/// Name of the task's end of the veth pair, inside its namespace.
const TASK_IFNAME: &str = "eth0";

/// How to wire one task's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskNetSpec {
    /// Name of the host end of the veth pair (at most 15 bytes, unique on the node), e.g. `"sh"`
    /// followed by 10 characters of the task id.
    pub veth_host: String,
    /// Bridge the host end is attached to; must exist (see [`crate::ensure_bridge`]).
    pub bridge: String,
    /// The task's address on `eth0`, e.g. `10.255.0.7/16`.
    pub address: Ipv4Cidr,
    /// Default gateway inside the namespace (the bridge's address).
    pub gateway: Ipv4Addr,
}

/// A task's network namespace, held by file descriptor, plus the host end of its veth pair.
///
/// Dropping it without [`TaskNetns::destroy`] closes the descriptor; the kernel then frees the
/// namespace once no process is left in it, which also deletes the veth pair.
#[derive(Debug)]
pub struct TaskNetns {
    /// Keeps the namespace alive; processes enter it through this descriptor.
    fd: OwnedFd,
    /// Host end of the veth pair, deleted by `destroy`.
    veth_host: String,
    /// The task's address on `eth0`.
    address: Ipv4Cidr,
}

// === impl TaskNetns ===

impl TaskNetns {
    /// Create a namespace and a veth pair: the host end attached to `spec.bridge` and up; the
    /// peer created directly inside the namespace as `eth0`, with `spec.address` and the MAC
    /// [`mac_for_ip`]`(spec.address.addr)`, up; `lo` up; a default route via `spec.gateway`.
    /// Both ends get the bridge's MTU (lower than 1500 once a VXLAN port is attached).
    ///
    /// Acts in the calling thread's namespace for the host side. On failure nothing is left
    /// behind.
    pub async fn create(spec: &TaskNetSpec) -> Result<TaskNetns, NetError> {
        Self::create_with_mac(spec, Some(mac_for_ip(spec.address.addr))).await
    }

    /// Like [`TaskNetns::create`], with `eth0`'s MAC chosen by the caller (`None`: a random
    /// one from the kernel).
    pub async fn create_with_mac(
        spec: &TaskNetSpec,
        mac: Option<[u8; 6]>,
    ) -> Result<TaskNetns, NetError> {
        validate_link_name(&spec.veth_host)?;
        let fd = new_netns_async().await?;
        let veth_op = format!("create veth {} on bridge {}", spec.veth_host, spec.bridge);
        create_veth(spec, mac, &veth_op, fd.as_raw_fd()).await?;
        let task = TaskNetns {
            fd,
            veth_host: spec.veth_host.clone(),
            address: spec.address,
        };
        if let Err(err) = task.configure_inside(spec).await {
            // Closing the fd would remove the pair too, but asynchronously; delete it now so
            // the name can be reused at once.
            if let Err(cleanup) = delete_link(&task.veth_host).await {
                tracing::warn!(%cleanup, veth = %task.veth_host, "cleanup after failed task netns setup");
            }
            return Err(err);
        }
        tracing::debug!(veth = %spec.veth_host, address = %spec.address, "task netns ready");
        Ok(task)
    }

    /// The namespace descriptor (for `setns` or for moving more links into it).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The raw namespace descriptor, for [`crate::enter_netns`] in `Command::pre_exec`.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Name of the host end of the veth pair.
    pub fn veth_host(&self) -> &str {
        &self.veth_host
    }

    /// The task's address on `eth0`.
    pub fn address(&self) -> Ipv4Cidr {
        self.address
    }

    /// Delete the host veth (the peer goes with it) and close the descriptor. A veth that is
    /// already gone is fine.
    pub async fn destroy(self) -> Result<(), NetError> {
        delete_link(&self.veth_host).await
        // `self.fd` is closed here; the namespace disappears with its last process.
    }

    /// Inside the namespace: `lo` up, `eth0` up with the address, default route.
    async fn configure_inside(&self, spec: &TaskNetSpec) -> Result<(), NetError> {
        let op = format!(
            "configure {TASK_IFNAME} of veth {} in task netns",
            spec.veth_host
        );
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| NetError::os(format!("{op}: dup netns fd"), e))?;
        let (address, gateway) = (spec.address, spec.gateway);
        let inner_op = op.clone();
        run_in_netns_async(&op, fd, move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| NetError::os(format!("{inner_op}: build runtime"), e))?;
            runtime.block_on(configure_task_links(&inner_op, address, gateway))
        })
        .await
    }
}

/// One RTM_NEWLINK: host end named `veth_host`, enslaved to the bridge and up; peer named
/// `eth0` created in the namespace `netns_fd` (so no temporary name ever exists on the host),
/// with `mac` if given. Both ends take the bridge's MTU.
async fn create_veth(
    spec: &TaskNetSpec,
    mac: Option<[u8; 6]>,
    op: &str,
    netns_fd: RawFd,
) -> Result<(), NetError> {
    with_netlink(op, |handle| async move {
        let bridge = find_link(&handle, &spec.bridge)
            .await
            .map_err(|e| NetError::netlink(op, e))?
            .ok_or_else(|| NetError::LinkNotFound {
                op: op.to_string(),
                link: spec.bridge.clone(),
            })?;
        let mtu = link_mtu(&bridge);
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(TASK_IFNAME)
            .setns_by_fd(netns_fd);
        let mut veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(spec.veth_host.clone())
            .controller(bridge.header.index)
            .up();
        if let Some(mac) = mac {
            peer = peer.address(mac.to_vec());
        }
        if let Some(mtu) = mtu {
            peer = peer.mtu(mtu);
            veth = veth.mtu(mtu);
        }
        let veth = veth
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        handle
            .link()
            .add(veth)
            .execute()
            .await
            .map_err(|e| NetError::netlink(op, e))
    })
    .await
}

/// Runs on a thread inside the task namespace.
async fn configure_task_links(
    op: &str,
    address: Ipv4Cidr,
    gateway: Ipv4Addr,
) -> Result<(), NetError> {
    with_netlink(op, |handle| async move {
        let lo = require_link(&handle, op, "lo").await?;
        set_up(&handle, lo, "lo").await?;
        let eth0 = require_link(&handle, op, TASK_IFNAME).await?;
        set_up(&handle, eth0, TASK_IFNAME).await?;
        add_address(&handle, eth0, TASK_IFNAME, address, false).await?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(eth0)
            .build();
        handle.route().add(route).execute().await.map_err(|e| {
            NetError::netlink(
                format!("add default route via {gateway} dev {TASK_IFNAME}"),
                e,
            )
        })
    })
    .await
}
