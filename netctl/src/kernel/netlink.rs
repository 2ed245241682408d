//! Links, addresses and routes over rtnetlink, as plain blocking calls.
//!
//! A [`Netlink`] talks to the network namespace of the thread that created it; to act inside a
//! container, create one on a thread that has entered the container's namespace
//! ([`crate::kernel::netns::run_in`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{anyhow, Context, Result};
use futures::TryStreamExt;
use ipnetwork::{Ipv4Network, Ipv6Network};
use rtnetlink::{
    packet_route::{
        address::AddressAttribute,
        link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
        route::{RouteAddress, RouteAttribute, RouteMessage},
        AddressFamily,
    },
    Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

/// What netctl needs to know about a link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// "bridge", "veth", … ("" for devices without a kind, e.g. lo or physical NICs).
    pub kind: String,
    /// Index of the bridge this link is enslaved to.
    pub controller: Option<u32>,
    pub group: u32,
    pub up: bool,
    pub mtu: u32,
    pub mac: Vec<u8>,
}

pub struct Netlink {
    rt: tokio::runtime::Runtime,
    handle: Handle,
}

fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST)
}

fn is_not_found(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.raw_code() == -libc::ENODEV || m.raw_code() == -libc::ENOENT || m.raw_code() == -libc::ESRCH)
}

impl Netlink {
    /// Opens a netlink socket in the calling thread's network namespace.
    pub fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the netlink runtime")?;
        let handle = rt.block_on(async {
            let (conn, handle, _) =
                rtnetlink::new_connection().context("opening a netlink socket")?;
            tokio::spawn(conn);
            Ok::<_, anyhow::Error>(handle)
        })?;
        Ok(Self { rt, handle })
    }

    pub fn links(&self) -> Result<Vec<Link>> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut stream = self.handle.link().get().execute();
            while let Some(msg) = stream.try_next().await.context("listing links")? {
                out.push(parse_link(&msg));
            }
            Ok(out)
        })
    }

    /// Interfaces whose traffic someone's queueing disciplines shape: a root qdisc other than
    /// the kernel's default for the device (`noqueue`, which veths have), or an `ingress`
    /// qdisc (where the CNI bandwidth plugin hangs its redirect to an ifb). netctl's own
    /// `clsact` (tc netlink attachments) does not count.
    pub fn shaped_links(&self) -> Result<std::collections::BTreeSet<u32>> {
        use rtnetlink::packet_route::tc::{TcAttribute, TcHandle};
        self.rt.block_on(async {
            let mut out = std::collections::BTreeSet::new();
            let mut stream = self.handle.qdisc().get().execute();
            while let Some(msg) = stream.try_next().await.context("listing qdiscs")? {
                let kind = msg.attributes.iter().find_map(|a| match a {
                    TcAttribute::Kind(k) => Some(k.as_str()),
                    _ => None,
                });
                let shapes = match kind {
                    Some("ingress") => true,
                    Some("noqueue" | "clsact") | None => false,
                    Some(_) => msg.header.parent == TcHandle::ROOT,
                };
                if shapes && msg.header.index > 0 {
                    out.insert(msg.header.index as u32);
                }
            }
            Ok(out)
        })
    }

    /// One link by name (one request, not a dump).
    pub fn link(&self, name: &str) -> Result<Option<Link>> {
        self.rt.block_on(async {
            let mut stream = self
                .handle
                .link()
                .get()
                .match_name(name.to_string())
                .execute();
            match stream.try_next().await {
                Ok(msg) => Ok(msg.map(|m| parse_link(&m))),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(anyhow!("looking up interface {name}: {e}")),
            }
        })
    }

    /// Every link, like [`Netlink::links`], without dumping the container veths named in
    /// `veths`: a dump fills in each veth's peer namespace ID, a search linear in the number
    /// of namespaces, so one dump on a host with 1,000 containers costs ~30 ms of kernel time.
    /// Names come from /proc/thread-self/net/dev; the `veths` get only their index (an
    /// ioctl), kind "veth" and `group`; every other link is looked up by name.
    pub fn links_sparing(
        &self,
        veths: &std::collections::HashSet<&str>,
        group: u32,
    ) -> Result<Vec<Link>> {
        let dev = std::fs::read_to_string("/proc/thread-self/net/dev")
            .context("reading /proc/thread-self/net/dev")?;
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .context("opening a socket for interface lookups")?;
        let mut out = Vec::new();
        for name in dev_names(&dev) {
            // A link removed since the listing is simply not there.
            if veths.contains(name) {
                if let Some(index) = ifindex(&sock, name) {
                    out.push(Link {
                        index,
                        name: name.to_string(),
                        kind: "veth".into(),
                        group,
                        ..Default::default()
                    });
                }
            } else if let Some(l) = self.link(name)? {
                out.push(l);
            }
        }
        Ok(out)
    }

    fn index_of(&self, name: &str) -> Result<u32> {
        self.link(name)?
            .map(|l| l.index)
            .ok_or_else(|| anyhow!("interface {name} does not exist"))
    }

    /// Creates a bridge (down) in interface group `group`, which marks it as this netctl
    /// instance's from the moment it exists. Fails if the name is taken.
    pub fn add_bridge(&self, name: &str, mtu: u32, group: u32) -> Result<u32> {
        let msg = LinkBridge::new(name)
            .append_extra_attribute(LinkAttribute::Group(group))
            .mtu(mtu);
        self.add(name, "bridge", msg.build())
    }

    /// Creates the link `msg` describes; `what` names its kind in errors.
    fn add(&self, name: &str, what: &str, msg: LinkMessage) -> Result<u32> {
        self.rt
            .block_on(self.handle.link().add(msg).execute())
            .map_err(|e| {
                if is_exists(&e) {
                    anyhow!("interface {name} already exists")
                } else {
                    anyhow!("creating {what} {name}: {e}")
                }
            })?;
        self.index_of(name)
    }

    /// Creates the overlay's VXLAN device in collect-metadata ("external") mode: no VNI, no
    /// remote, no learning — the TC programs set the tunnel key of every packet.
    pub fn add_vxlan_external(&self, name: &str, port: u16, mtu: u32, group: u32) -> Result<u32> {
        let msg = rtnetlink::LinkVxlan::new(name, 0)
            .collect_metadata(true)
            .port(port)
            .learning(false)
            .append_extra_attribute(LinkAttribute::Group(group))
            .mtu(mtu)
            .up()
            .build();
        self.add(name, "VXLAN device", msg)
    }

    /// Creates a kernel WireGuard device (its key, port and peers are set through generic
    /// netlink: `kernel::wireguard::genl`).
    pub fn add_wireguard(&self, name: &str, mtu: u32, group: u32) -> Result<u32> {
        let msg = rtnetlink::LinkWireguard::new(name)
            .append_extra_attribute(LinkAttribute::Group(group))
            .mtu(mtu)
            .up()
            .build();
        self.add(name, "WireGuard device", msg)
    }

    /// Puts a link made by other means (a TUN device's ioctl) in `group`, with `mtu`, up.
    pub fn adopt(&self, index: u32, mtu: u32, group: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::Group(group))
            .mtu(mtu)
            .up()
            .build();
        self.rt
            .block_on(self.handle.link().set(msg).execute())
            .with_context(|| format!("setting up link {index}"))
    }

    /// Creates a veth pair; `peer` is moved into the namespace behind `peer_netns_fd` at once so
    /// no container-side name ever shows up in this namespace.
    /// The host side is created in interface group `group` (see [`Netlink::add_bridge`]).
    /// A veth pair, the host end in `group`, the peer moved into the namespace of
    /// `peer_netns_fd`.
    pub fn add_veth(
        &self,
        host: &str,
        peer: &str,
        peer_netns_fd: i32,
        mtu: u32,
        group: u32,
    ) -> Result<u32> {
        let peer_attrs = vec![
            LinkAttribute::NetNsFd(peer_netns_fd),
            LinkAttribute::Mtu(mtu),
        ];
        self.veth(host, peer, mtu, group, peer_attrs)
    }

    /// A veth pair with both ends here, both in `group`, the peer with `peer_mac`: for an
    /// engine that moves the peer into its container itself (dockerd's Join).
    pub fn add_veth_pair(
        &self,
        host: &str,
        peer: &str,
        peer_mac: [u8; 6],
        mtu: u32,
        group: u32,
    ) -> Result<u32> {
        let peer_attrs = vec![
            LinkAttribute::Group(group),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::Address(peer_mac.to_vec()),
        ];
        self.veth(host, peer, mtu, group, peer_attrs)
    }

    fn veth(
        &self,
        host: &str,
        peer: &str,
        mtu: u32,
        group: u32,
        peer_attrs: Vec<LinkAttribute>,
    ) -> Result<u32> {
        use rtnetlink::packet_route::link::{InfoData, InfoVeth};
        let mut msg = LinkVeth::new(host, peer)
            .append_extra_attribute(LinkAttribute::Group(group))
            .mtu(mtu)
            .build();
        // The peer's attributes sit inside the veth info data.
        for attr in msg.attributes.iter_mut() {
            if let LinkAttribute::LinkInfo(infos) = attr {
                for info in infos.iter_mut() {
                    if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) = info {
                        p.attributes.extend(peer_attrs.iter().cloned());
                    }
                }
            }
        }
        self.rt
            .block_on(self.handle.link().add(msg).execute())
            .map_err(|e| {
                if is_exists(&e) {
                    anyhow!("interface {host} already exists")
                } else {
                    anyhow!("creating veth {host}: {e}")
                }
            })?;
        self.index_of(host)
    }

    pub fn rename(&self, index: u32, name: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).name(name).build();
        self.rt
            .block_on(self.handle.link().set(msg).execute())
            .with_context(|| format!("renaming link {index} to {name}"))
    }

    pub fn set_up(&self, index: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.rt
            .block_on(self.handle.link().set(msg).execute())
            .with_context(|| format!("setting link {index} up"))
    }

    pub fn set_controller(&self, index: u32, bridge: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).controller(bridge).build();
        match self.rt.block_on(self.handle.link().set(msg).execute()) {
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::EXFULL => Err(anyhow!(
                "the network's bridge is full: a Linux bridge takes at most 1,023 interfaces; put more containers on another network"
            )),
            r => r.with_context(|| format!("attaching link {index} to bridge {bridge}")),
        }
    }

    /// Makes a bridge port unable to steer the bridge: no learning from what it sends, and
    /// its container's MAC as a static entry (`bridge fdb add MAC dev PORT master static`),
    /// so a container that takes another's MAC moves nothing.
    pub fn pin_bridge_port(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        use rtnetlink::{
            packet_route::{
                link::InfoBridgePort,
                neighbour::{NeighbourFlags, NeighbourState},
            },
            LinkBridgePort,
        };
        let msg = LinkBridgePort::new(index)
            .append_info_data(InfoBridgePort::Learning(false))
            .build();
        self.rt
            .block_on(self.handle.link().set_port(msg).execute())
            .with_context(|| format!("turning learning off on bridge port {index}"))?;
        self.rt
            .block_on(
                self.handle
                    .neighbours()
                    .add_bridge(index, &mac)
                    .state(NeighbourState::Noarp)
                    .flags(NeighbourFlags::Controller)
                    .replace()
                    .execute(),
            )
            .with_context(|| format!("adding the static bridge entry of port {index}"))
    }

    pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.rt
            .block_on(self.handle.link().set(msg).execute())
            .with_context(|| format!("setting the MTU of link {index} to {mtu}"))
    }

    /// The MTU of the interface that holds `addr`, if one does.
    pub fn mtu_of_address(&self, addr: std::net::Ipv4Addr) -> Result<Option<u32>> {
        let Some((index, _)) = self.addresses()?.into_iter().find(|(_, n)| n.ip() == addr) else {
            return Ok(None);
        };
        Ok(self
            .links()?
            .into_iter()
            .find(|l| l.index == index)
            .map(|l| l.mtu))
    }

    pub fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index)
            .address(mac.to_vec())
            .build();
        self.rt
            .block_on(self.handle.link().set(msg).execute())
            .with_context(|| format!("setting the MAC address of link {index}"))
    }

    /// Deletes a link; a link that is already gone is not an error.
    pub fn del_link(&self, index: u32) -> Result<()> {
        match self.rt.block_on(self.handle.link().del(index).execute()) {
            Err(e) if !is_not_found(&e) => Err(anyhow!("deleting link {index}: {e}")),
            _ => Ok(()),
        }
    }

    /// Deletes the link called `name` if it is netctl's (in an instance's interface group,
    /// [`crate::model::instance::GROUP_FLAG`]): a link of the same name that someone else made
    /// (another CNI plugin's `veth…`) is left alone.
    pub fn del_link_by_name(&self, name: &str) -> Result<()> {
        match self.link(name)? {
            Some(l) if l.group & crate::model::instance::GROUP_FLAG != 0 => self.del_link(l.index),
            _ => Ok(()),
        }
    }

    pub fn add_address(&self, index: u32, addr: Ipv4Addr, prefix: u8) -> Result<()> {
        match self.rt.block_on(
            self.handle
                .address()
                .add(index, IpAddr::V4(addr), prefix)
                .execute(),
        ) {
            Err(e) if !is_exists(&e) => Err(anyhow!("adding {addr}/{prefix}: {e}")),
            _ => Ok(()),
        }
    }

    /// Adds an IPv6 address without duplicate address detection: netctl hands out each
    /// address once, and a tentative address would not be usable for a second or so.
    pub fn add_address6(&self, index: u32, addr: Ipv6Addr, prefix: u8) -> Result<()> {
        let mut req = self.handle.address().add(index, IpAddr::V6(addr), prefix);
        req.message_mut().header.flags =
            rtnetlink::packet_route::address::AddressHeaderFlags::Nodad;
        match self.rt.block_on(req.execute()) {
            Err(e) if !is_exists(&e) => Err(anyhow!("adding {addr}/{prefix}: {e}")),
            _ => Ok(()),
        }
    }

    /// Every IPv6 address of the namespace with its interface index (link-local ones
    /// included: they are the host's too).
    pub fn addresses6(&self) -> Result<Vec<(u32, Ipv6Network)>> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut request = self.handle.address().get();
            request.message_mut().header.family = AddressFamily::Inet6;
            let mut stream = request.execute();
            while let Some(msg) = stream.try_next().await.context("listing addresses")? {
                for attr in &msg.attributes {
                    if let AddressAttribute::Address(IpAddr::V6(ip)) = attr {
                        if let Ok(net) = Ipv6Network::new(*ip, msg.header.prefix_len) {
                            if !out.contains(&(msg.header.index, net)) {
                                out.push((msg.header.index, net));
                            }
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    /// Every IPv4 address of the namespace with its interface index.
    pub fn addresses(&self) -> Result<Vec<(u32, Ipv4Network)>> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut request = self.handle.address().get();
            // IPv4 only, asked of the kernel: every container veth has an IPv6 link-local
            // address, thousands of messages for nothing on a busy host.
            request.message_mut().header.family = AddressFamily::Inet;
            let mut stream = request.execute();
            while let Some(msg) = stream.try_next().await.context("listing addresses")? {
                for attr in &msg.attributes {
                    if let AddressAttribute::Local(IpAddr::V4(ip))
                    | AddressAttribute::Address(IpAddr::V4(ip)) = attr
                    {
                        if let Ok(net) = Ipv4Network::new(*ip, msg.header.prefix_len) {
                            if !out.contains(&(msg.header.index, net)) {
                                out.push((msg.header.index, net));
                            }
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    /// IPv4 routes of the main table: (destination, output interface).
    pub fn routes(&self) -> Result<Vec<(Ipv4Network, Option<u32>)>> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
            let mut stream = self.handle.route().get(filter).execute();
            while let Some(msg) = stream.try_next().await.context("listing routes")? {
                if msg.header.address_family != AddressFamily::Inet || msg.header.table != 254 {
                    continue;
                }
                out.push(parse_route(&msg));
            }
            Ok(out)
        })
    }

    /// Interfaces that carry a default route.
    pub fn default_route_interfaces(&self) -> Result<Vec<u32>> {
        let mut out: Vec<u32> = self
            .routes()?
            .into_iter()
            .filter(|(dst, _)| dst.prefix() == 0)
            .filter_map(|(_, oif)| oif)
            .collect();
        out.dedup();
        Ok(out)
    }

    pub fn add_default_route6(&self, gateway: Ipv6Addr) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv6Addr>::new()
            .gateway(gateway)
            .build();
        match self.rt.block_on(self.handle.route().add(msg).execute()) {
            Err(e) if !is_exists(&e) => Err(anyhow!("adding default route via {gateway}: {e}")),
            _ => Ok(()),
        }
    }

    pub fn add_default_route(&self, gateway: Ipv4Addr) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        match self.rt.block_on(self.handle.route().add(msg).execute()) {
            Err(e) if !is_exists(&e) => Err(anyhow!("adding default route via {gateway}: {e}")),
            _ => Ok(()),
        }
    }
}

/// The messages of a netlink datagram, each whole (header included) with its type; a
/// truncated or malformed one ends it as an `Err`.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), ()>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let header = rest.get(..16);
        let len = header.map_or(0, |h| u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize);
        if len < 16 || len > rest.len() {
            rest = &[];
            return Some(Err(()));
        }
        let (msg, tail) = (&rest[..len], &rest[((len + 3) & !3).min(rest.len())..]);
        rest = tail;
        Some(Ok((u16::from_ne_bytes([msg[4], msg[5]]), msg)))
    })
}

/// Interface names in /proc/net/dev (two header lines, then `name: counters`).
fn dev_names(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim()))
}

/// A link's index by name (SIOCGIFINDEX: a hash lookup in the kernel).
fn ifindex(sock: &socket2::Socket, name: &str) -> Option<u32> {
    use std::os::fd::AsRawFd;
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return None;
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFINDEX reads ifr_name and writes ifr_ifindex of the ifreq we own.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFINDEX, &mut req) };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success the kernel filled in the index.
    Some(unsafe { req.ifr_ifru.ifru_ifindex } as u32)
}

fn parse_link(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        up: msg.header.flags.contains(LinkFlags::Up),
        ..Default::default()
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Group(g) => link.group = *g,
            LinkAttribute::Controller(c) => link.controller = Some(*c),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Address(a) => link.mac = a.clone(),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = match kind {
                            InfoKind::Bridge => "bridge".into(),
                            InfoKind::Veth => "veth".into(),
                            InfoKind::Vxlan => "vxlan".into(),
                            other => format!("{other:?}").to_lowercase(),
                        };
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn parse_route(msg: &RouteMessage) -> (Ipv4Network, Option<u32>) {
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let net = Ipv4Network::new(dst, msg.header.destination_prefix_length)
        .unwrap_or_else(|_| Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("valid"));
    (net, oif)
}

/// A netlink socket that receives the rtnetlink multicast `groups` (a bit mask of
/// `RTMGRP_*`): how the daemon hears of changes to links, addresses and qdiscs.
pub fn multicast_socket(groups: u32) -> Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{
        bind, socket, AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType,
    };
    use std::os::fd::AsRawFd;
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .context("netlink socket")?;
    bind(sock.as_raw_fd(), &NetlinkAddr::new(0, groups))
        .context("joining rtnetlink's multicast groups")?;
    Ok(sock)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dev_names() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes    packets\n    lo: 0 0 0\n  up0:    12 3 0\nveth-a.b: 1 2\n";
        assert_eq!(
            super::dev_names(text).collect::<Vec<_>>(),
            ["lo", "up0", "veth-a.b"]
        );
    }
}
