//! Links, addresses and routes over rtnetlink, in one network namespace.
//!
//! A netlink socket talks to the namespace of the thread that created it, for its whole life.
//! [`Netlink::connect`] opens one in the caller's namespace; [`Netlink::connect_in`] opens one
//! on a short-lived thread inside another namespace (see [`crate::netns::run_in`]) and hands it
//! back, so the caller's threads never change namespace. Both need a tokio runtime (any flavour):
//! the connection runs as a task on it.
//!
//! Only the few operations the CNI plugin and the agent need are here; each is one request and
//! "already there" / "already gone" outcomes are reported as `Ok(false)` rather than errors, so
//! callers can be idempotent without parsing errnos.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};
use thiserror::Error;

use crate::netns::{self, NetnsError};

/// `EEXIST`: the object is already there.
const EEXIST: i32 = 17;
/// `ENODEV`: no such device.
const ENODEV: i32 = 19;
/// `ESRCH`: no such process (the kernel's answer for a missing route).
const ESRCH: i32 = 3;
/// `EADDRNOTAVAIL`: no such address.
const EADDRNOTAVAIL: i32 = 99;

/// Failures of netlink operations.
#[derive(Debug, Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("open netlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// Entering the namespace to open the socket failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The kernel refused a request (`errno` is the positive error number when it sent one).
    #[error("{op}: {source}")]
    Request {
        /// What was attempted, with the object (`add address 10.0.0.2/24 on 5`).
        op: String,
        /// The errno the kernel answered, if any.
        errno: Option<i32>,
        /// The rtnetlink error.
        #[source]
        source: rtnetlink::Error,
    },
}

impl NetlinkError {
    /// The errno of a refused request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Request { errno, .. } => *errno,
            _ => None,
        }
    }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn req_err(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let op = op.into();
    move |source| NetlinkError::Request {
        op,
        errno: errno_of(&source),
        source,
    }
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The interface index.
    pub index: u32,
    /// The interface name.
    pub name: String,
    /// The hardware address, if it has one.
    pub mac: Option<[u8; 6]>,
    /// Whether it is administratively up.
    pub up: bool,
    /// The index of the bridge (or other controller) it is attached to.
    pub master: Option<u32>,
}

/// An address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The address with its prefix length.
    pub net: IpNet,
    /// IPv6 duplicate address detection has not finished (the address is not usable yet).
    pub tentative: bool,
}

/// A route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination (`0.0.0.0/0` / `::/0` for the default route).
    pub dst: IpNet,
    /// Next hop, if any.
    pub gateway: Option<IpAddr>,
    /// Output interface index, if any.
    pub oif: Option<u32>,
}

/// The two ends of a veth pair to create: `host_*` stays in the calling namespace, attached to
/// `master`; the peer is created directly in `peer_netns` with its final name. Both ends are
/// created up.
#[derive(Debug)]
pub struct VethSpec<'a> {
    /// The host end's name.
    pub host_name: &'a str,
    /// The host end's MAC address.
    pub host_mac: [u8; 6],
    /// The bridge the host end is attached to.
    pub master: u32,
    /// The peer's name inside `peer_netns`.
    pub peer_name: &'a str,
    /// The peer's MAC address.
    pub peer_mac: [u8; 6],
    /// An open handle of the peer's namespace ([`crate::netns::open`]).
    pub peer_netns: &'a File,
    /// MTU of both ends.
    pub mtu: u32,
}

/// A netlink connection bound to one network namespace.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection in the calling thread's namespace. Must be called within a tokio
    /// runtime.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Opens a connection inside the namespace at `netns`. Must be called within a tokio
    /// runtime; the socket is created on a helper thread in the namespace and used from here.
    pub fn connect_in(netns: &Path) -> Result<Self, NetlinkError> {
        Self::connect_in_with(netns, || ()).map(|(nl, ())| nl)
    }

    /// [`Netlink::connect_in`], also running `f` on the same thread inside the namespace first
    /// (for `/proc/sys/net` writes, see [`crate::sysctl`]): one thread instead of two, which
    /// matters on a busy node where each new thread waits to be scheduled.
    pub fn connect_in_with<T, F>(netns: &Path, f: F) -> Result<(Self, T), NetlinkError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let rt = tokio::runtime::Handle::current();
        let (made, out) = netns::run_in(netns, move || {
            let out = f();
            let _entered = rt.enter();
            (rtnetlink::new_connection(), out)
        })?;
        let (conn, handle, _) = made.map_err(NetlinkError::Connect)?;
        tokio::spawn(conn);
        Ok((Self { handle }, out))
    }

    /// The link called `name`, if there is one.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let got = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await;
        match got {
            Ok(Some(msg)) => Ok(Some(link_from(&msg))),
            Ok(None) => Ok(None),
            Err(e) if errno_of(&e) == Some(ENODEV) => Ok(None),
            Err(e) => Err(req_err(format!("get link {name}"))(e)),
        }
    }

    /// Creates the bridge `name` (up, with `mac` and `mtu`) unless it exists, and sets it up.
    /// Returns its index.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        mac: [u8; 6],
        mtu: u32,
    ) -> Result<u32, NetlinkError> {
        if let Some(link) = self.link_by_name(name).await? {
            if !link.up {
                self.set_up(link.index).await?;
            }
            return Ok(link.index);
        }
        let msg = LinkBridge::new(name).address(mac.to_vec()).mtu(mtu).build();
        match self.handle.link().add(msg).execute().await {
            Ok(()) => {}
            // Another ADD created it meanwhile.
            Err(e) if errno_of(&e) == Some(EEXIST) => {}
            Err(e) => return Err(req_err(format!("add bridge {name}"))(e)),
        }
        let link = self
            .link_by_name(name)
            .await?
            .ok_or_else(|| NetlinkError::Request {
                op: format!("get bridge {name} after creating it"),
                errno: Some(ENODEV),
                source: rtnetlink::Error::RequestFailed,
            })?;
        if !link.up {
            self.set_up(link.index).await?;
        }
        Ok(link.index)
    }

    /// Creates a veth pair as `spec` says, in one request. `Ok(false)` when a link of one of
    /// the names already exists (the host end here or the peer in its namespace).
    pub async fn add_veth(&self, spec: &VethSpec<'_>) -> Result<bool, NetlinkError> {
        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(spec.peer_name.to_string())
            .address(spec.peer_mac.to_vec())
            .mtu(spec.mtu)
            .setns_by_fd(spec.peer_netns.as_raw_fd())
            .build();
        let msg = LinkVeth::new(spec.host_name, spec.peer_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .address(spec.host_mac.to_vec())
            .mtu(spec.mtu)
            .controller(spec.master)
            .up()
            .build();
        match self.handle.link().add(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(EEXIST) => Ok(false),
            Err(e) => Err(req_err(format!(
                "add veth {} (peer {})",
                spec.host_name, spec.peer_name
            ))(e)),
        }
    }

    /// Sets the link up.
    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(req_err(format!("set link {index} up")))
    }

    /// Turns hairpin mode of a bridge port on or off (`ip link set NAME type bridge_slave
    /// hairpin on`): with it, the bridge may send a frame back out of the port it came in on,
    /// which a pod reaching its own Service needs (the DNATed packet returns to its sender).
    pub async fn set_hairpin(&self, index: u32, on: bool) -> Result<(), NetlinkError> {
        let msg = rtnetlink::LinkBridgePort::new(index).hairpin(on).build();
        self.handle
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(req_err(format!("set hairpin {on} on link {index}")))
    }

    /// Deletes the link called `name`; `Ok(false)` when there is none. Deleting one end of a
    /// veth pair deletes both.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        let Some(link) = self.link_by_name(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(ENODEV) => Ok(false),
            Err(e) => Err(req_err(format!("delete link {name}"))(e)),
        }
    }

    /// Adds `net` (address and prefix length) to the link; for IPv6 with `nodad` the address is
    /// usable at once (IFA_F_NODAD). `Ok(false)` when the link already has it.
    pub async fn add_address(
        &self,
        index: u32,
        net: IpNet,
        nodad: bool,
    ) -> Result<bool, NetlinkError> {
        let mut req = self
            .handle
            .address()
            .add(index, net.addr(), net.prefix_len());
        if nodad && net.addr().is_ipv6() {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(EEXIST) => Ok(false),
            Err(e) => Err(req_err(format!("add address {net} on link {index}"))(e)),
        }
    }

    /// The addresses of the link, both families.
    pub async fn addresses(&self, index: u32) -> Result<Vec<Address>, NetlinkError> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(req_err(format!("list addresses of link {index}")))?
        {
            if msg.header.index != index {
                continue;
            }
            let mut addr = None;
            let mut local = None;
            let mut flags = AddressFlags::from_bits_retain(u32::from(msg.header.flags.bits()));
            for a in &msg.attributes {
                match a {
                    AddressAttribute::Address(ip) => addr = Some(*ip),
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::Flags(f) => flags = *f,
                    _ => {}
                }
            }
            // For IPv4, IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on
            // point-to-point links).
            if let Some(ip) = local.or(addr)
                && let Ok(net) = IpNet::new(ip, msg.header.prefix_len)
            {
                out.push(Address {
                    net,
                    tentative: flags.contains(AddressFlags::Tentative),
                });
            }
        }
        Ok(out)
    }

    /// Adds a route to `dst` via `gateway` in the main table (out of `oif` if given).
    /// `Ok(false)` when it exists.
    pub async fn add_route(
        &self,
        dst: IpNet,
        gateway: IpAddr,
        oif: Option<u32>,
    ) -> Result<bool, NetlinkError> {
        let op = || format!("add route {dst} via {gateway}");
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .and_then(|b| b.gateway(gateway))
            .map_err(|e| NetlinkError::Request {
                op: format!("{}: {e}", op()),
                errno: None,
                source: rtnetlink::Error::RequestFailed,
            })?;
        if let Some(i) = oif {
            b = b.output_interface(i);
        }
        match self.handle.route().add(b.build()).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno_of(&e) == Some(EEXIST) => Ok(false),
            Err(e) => Err(req_err(op())(e)),
        }
    }

    /// Every address of every link in the namespace, both families (for a node's local
    /// addresses).
    pub async fn all_addresses(&self) -> Result<Vec<IpAddr>, NetlinkError> {
        let mut stream = self.handle.address().get().execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(req_err("list addresses".to_string()))?
        {
            let mut addr = None;
            let mut local = None;
            for a in &msg.attributes {
                match a {
                    AddressAttribute::Address(ip) => addr = Some(*ip),
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    _ => {}
                }
            }
            out.extend(local.or(addr));
        }
        Ok(out)
    }

    /// Adds (or replaces) a route to `dst` over several next hops at once (ECMP, as a BGP
    /// speaker installs one prefix learned from several peers). Every gateway must be of
    /// `dst`'s family.
    pub async fn replace_multipath_route(
        &self,
        dst: IpNet,
        gateways: &[IpAddr],
    ) -> Result<(), NetlinkError> {
        use rtnetlink::packet_route::route::RouteNextHop;
        let op = || format!("add route {dst} via {gateways:?}");
        let hops: Vec<RouteNextHop> = gateways
            .iter()
            .map(|gw| {
                let mut nh = RouteNextHop::default();
                nh.attributes
                    .push(RouteAttribute::Gateway(RouteAddress::from(*gw)));
                nh
            })
            .collect();
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .map_err(|e| NetlinkError::Request {
                op: format!("{}: {e}", op()),
                errno: None,
                source: rtnetlink::Error::RequestFailed,
            })?
            .multipath(hops)
            .build();
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(req_err(op()))
    }

    /// The routes of the main table of one family (`v6` false: IPv4).
    pub async fn routes(&self, v6: bool) -> Result<Vec<Route>, NetlinkError> {
        let query = if v6 {
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        } else {
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        };
        let mut stream = self.handle.route().get(query).execute();
        let mut out = Vec::new();
        while let Some(msg) = stream.try_next().await.map_err(req_err("list routes"))? {
            if let Some(r) = route_from(&msg) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Deletes the route to `dst` in the main table; `Ok(false)` when there is none.
    pub async fn delete_route(&self, dst: IpNet) -> Result<bool, NetlinkError> {
        let msg = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dst.addr(), dst.prefix_len())
            .map_err(|e| NetlinkError::Request {
                op: format!("delete route {dst}: {e}"),
                errno: None,
                source: rtnetlink::Error::RequestFailed,
            })?
            .build();
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(true),
            Err(e) if matches!(errno_of(&e), Some(ESRCH | EADDRNOTAVAIL)) => Ok(false),
            Err(e) => Err(req_err(format!("delete route {dst}"))(e)),
        }
    }
}

fn link_from(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name.clone_from(n),
            LinkAttribute::Address(m) if m.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(m);
                link.mac = Some(mac);
            }
            LinkAttribute::Controller(i) => link.master = Some(*i),
            _ => {}
        }
    }
    link
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn route_from(msg: &RouteMessage) -> Option<Route> {
    if msg.header.table != RouteHeader::RT_TABLE_MAIN {
        return None;
    }
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    let mut table = u32::from(msg.header.table);
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = route_ip(d),
            RouteAttribute::Gateway(g) => gateway = route_ip(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let v6 = u8::from(msg.header.address_family) == 10;
    let dst = match dst {
        Some(ip) => IpNet::new(ip, msg.header.destination_prefix_length).ok()?,
        None if v6 => IpNet::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 0).ok()?,
        None => IpNet::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0).ok()?,
    };
    Some(Route { dst, gateway, oif })
}
