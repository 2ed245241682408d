//! The maps the programs read, derived from the state in one place ([`desired`]) and applied
//! as a difference ([`crate::kernel::dataplane::Dataplane::apply`]): unchanged entries are not rewritten.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use netctl_common::{
    maps::{
        Backend, Backend6, Config, EndpointInfo, Ip6, NetInfo, PortKey, PortKey6, Uplink,
        CONFIG_FAST_PATH, CONFIG_FORWARD_OPEN, NET_ICC, NET_INTERNAL, NET_MASQUERADE,
        UPLINK_XDP_NAT,
    },
    overlay::OverlayConfig,
    proto,
    sock::{SockNetns, NETNS_CONTAINER, NETNS_HOST},
};

use crate::{kernel::netlink::Link, model::ports::Proto, model::state::State};

/// Source ports masquerade and hairpin allocate from: above Linux's default ephemeral range
/// (32768-60999), so they do not collide with the host's own connections.
pub const NAT_PORTS: (u16, u16) = (61000, 65535);

/// An IPv4 address as the datapath holds it: the packet's bytes.
pub use crate::model::addr::{from_raw, raw};

/// Every entry of every map the controller owns.
#[derive(Debug, Default, PartialEq)]
pub struct Desired {
    pub config: Config,
    pub ports: Ports,
    pub host_addrs: BTreeSet<u32>,
    pub uplinks: BTreeMap<u32, Uplink>,
    pub endpoints: BTreeMap<u32, EndpointInfo>,
    pub networks: BTreeMap<u32, NetInfo>,
    /// (prefix length, network address) → bridge ifindex.
    pub subnets: BTreeMap<(u32, u32), u32>,
    /// IPv6: every address of the host; container addresses (global and link-local);
    /// (prefix length, network) → bridge ifindex.
    pub host_addrs6: BTreeSet<Ip6>,
    pub endpoints6: BTreeMap<Ip6, EndpointInfo>,
    pub subnets6: BTreeMap<(u32, Ip6), u32>,
    /// Uplink ifindex → the IPv6 address masquerade uses; container IPv4 → its IPv6 address.
    pub uplinks6: BTreeMap<u32, Ip6>,
    pub ip6_of: BTreeMap<u32, Ip6>,
    /// Routed IPv6 networks: what containers publish at their own addresses.
    pub published6: BTreeMap<netctl_common::maps::Published6, u32>,
    /// Ports published on one host IPv6 address or on `[::]`.
    pub portmap6: BTreeMap<PortKey6, Backend6>,
    /// Host-side veth ifindex → its endpoint (VETHS).
    pub veths: BTreeMap<u32, EndpointInfo>,
    /// Network namespace cookie → what the socket programs do there.
    pub sock_netns: BTreeMap<u64, SockNetns>,
    /// Overlay networks: bridge ifindex → VNI, and back; the VXLAN device.
    pub overlay_vnis: BTreeMap<u32, u32>,
    pub overlay_bridges: BTreeMap<u32, u32>,
    pub overlay: OverlayConfig,
    /// What legacy links let through ICC=false (`links::allowed`).
    pub links: BTreeMap<netctl_common::maps::LinkKey, u32>,
}

/// What the kernel side knows that the state does not: interfaces and addresses.
pub struct HostView<'a> {
    pub links: &'a [Link],
    /// (ifindex, address) of every IPv4 address of the namespace.
    pub addrs: &'a [(u32, Ipv4Addr)],
    /// The same for IPv6 (only read where a network has IPv6).
    pub addrs6: &'a [(u32, std::net::Ipv6Addr)],
    /// (name, ifindex, XDP attached).
    pub uplinks: &'a [(String, u32, bool)],
    pub fast_path: bool,
    /// The cookie of the namespace netctl runs in (its "host").
    pub host_cookie: u64,
    /// Container ID → its namespace's cookie.
    pub container_cookies: &'a BTreeMap<String, u64>,
    /// XDP runs in generic (skb) mode, where packets may carry partial checksums.
    pub xdp_generic: bool,
    /// IPv4 forwarding was on before netctl first ran here ([`CONFIG_FORWARD_OPEN`]).
    pub forward_open: bool,
    /// Conntrack entries one container may own (0: the default share).
    pub ct_endpoint_entries: u32,
    /// The instance's interface group (which links are its own).
    pub group: u32,
    /// The programs can do NAT64 (the `MODERN` ones: `bpf_loop`).
    pub nat64: bool,
}

fn mac6(mac: &[u8]) -> [u8; 6] {
    let mut out = [0u8; 6];
    if mac.len() == 6 {
        out.copy_from_slice(mac);
    }
    out
}

/// The embedded DNS a container asks at 127.0.0.11: the resolver on the gateway of its first
/// user-defined network. Containers only on the default network have none (Docker's rule).
/// On an IPv6-only network, the resolver on its IPv6 gateway (which the container names in
/// its resolv.conf: 127.0.0.11 would need an IPv4 route).
pub fn dns_server(state: &State, c: &crate::model::state::Container) -> Option<IpAddr> {
    if c.engine.as_deref() == Some("docker") {
        return None; // dockerd answers 127.0.0.11 in its containers itself
    }
    c.endpoints
        .iter()
        .filter(|e| e.network != crate::model::networks::DEFAULT_NETWORK)
        .find_map(|e| state.networks.get(&e.network))
        .and_then(|n| n.gateway())
}

/// A container's published ports as PORTMAP entries: they lead to its first endpoint, as
/// Docker's do; never into an internal network.
fn port_entries<'a>(
    state: &'a State,
    c: &'a crate::model::state::Container,
) -> impl Iterator<Item = (PortKey, Backend)> + 'a {
    let primary = c
        .endpoints
        .first()
        .filter(|p| state.networks.get(&p.network).is_some_and(|n| !n.internal));
    // An IPv6-only backend's ports are PORTMAP6's alone (`portmap6`).
    let primary = primary.and_then(|e| Some((e, e.ip?)));
    primary.into_iter().flat_map(move |(_, ip)| {
        c.ports.iter().filter_map(move |p| {
            let IpAddr::V4(addr) = p.host_ip else {
                return None; // PORTMAP6's
            };
            let key = PortKey {
                addr: raw(addr),
                port: p.host_port.to_be(),
                proto: l4(p.proto),
                _pad: 0,
            };
            let to = Backend {
                addr: raw(ip),
                port: p.container_port.to_be(),
                _pad: 0,
            };
            Some((key, to))
        })
    })
}

fn l4(p: Proto) -> u8 {
    match p {
        Proto::Tcp => proto::TCP,
        Proto::Udp => proto::UDP,
    }
}

/// Ports published on one host IPv6 address or on `[::]` (PORTMAP6): few, so the map is
/// synced whole like the others, not in deltas as PORTMAP. A backend with IPv4 is named by
/// its IPv4-mapped address (the datapath finds its IPv6 address in `IP6_OF`, the host's own
/// clients connect to it over IPv4, as for PORTMAP's); an IPv6-only one by its IPv6 address,
/// and its ports published on every address (`-p 8080:80`) are `[::]`'s (no IPv4 reaches it).
fn portmap6(state: &State) -> BTreeMap<PortKey6, Backend6> {
    let mut out = BTreeMap::new();
    for c in state.containers.values() {
        let Some(primary) = c
            .endpoints
            .first()
            .filter(|p| state.networks.get(&p.network).is_some_and(|n| !n.internal))
        else {
            continue;
        };
        let addr = match (primary.ip, primary.ip6) {
            (Some(ip), _) => ip.to_ipv6_mapped(),
            (None, Some(ip6)) => ip6,
            (None, None) => continue,
        };
        for p in &c.ports {
            let host = match p.host_ip {
                IpAddr::V6(host) => host,
                IpAddr::V4(any) if any.is_unspecified() && primary.ip.is_none() => {
                    std::net::Ipv6Addr::UNSPECIFIED
                }
                IpAddr::V4(_) => continue,
            };
            let key = PortKey6 {
                addr: host.octets(),
                port: p.host_port.to_be(),
                proto: l4(p.proto),
                _pad: 0,
            };
            let to = Backend6 {
                addr: addr.octets(),
                port: p.container_port.to_be(),
                _pad: 0,
            };
            out.insert(key, to);
        }
    }
    out
}

/// The published-port entries (PORTMAP, and PORT_STATS's keys) as the dataplane takes them:
/// all of them, only what changed since the state they were last applied from, or nothing.
#[derive(Debug, PartialEq)]
pub enum Ports {
    /// Every entry, and their fingerprint (recorded once they are applied).
    Full(BTreeMap<PortKey, Backend>, Fingerprint),
    Delta(PortDelta),
    /// The maps hold these entries already (their fingerprint is the record's).
    Unchanged(Fingerprint),
}

impl Ports {
    /// How many entries the maps hold once these are applied.
    pub fn count(&self) -> usize {
        match self {
            Ports::Full(m, _) => m.len(),
            Ports::Delta(d) => d.to.count as usize,
            Ports::Unchanged(f) => f.count as usize,
        }
    }
}

impl Default for Ports {
    fn default() -> Self {
        Self::Full(BTreeMap::new(), Fingerprint::default())
    }
}

/// What the published-port entries are, in one number, and how many there are: the sum of a
/// mix of each entry, so that it does not depend on their order and can be moved by a delta.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint {
    pub sum: u64,
    pub count: u64,
}

impl Fingerprint {
    fn with(self, k: &PortKey, b: &Backend) -> Self {
        Self {
            sum: self.sum.wrapping_add(mix(k, b)),
            count: self.count + 1,
        }
    }

    fn without(self, k: &PortKey, b: &Backend) -> Self {
        Self {
            sum: self.sum.wrapping_sub(mix(k, b)),
            count: self.count.wrapping_sub(1),
        }
    }
}

/// SplitMix64 of an entry's fields: a different entry gives an unrelated number.
fn mix(k: &PortKey, b: &Backend) -> u64 {
    let x = (u64::from(k.addr) << 32 | u64::from(k.port) << 16 | u64::from(k.proto))
        ^ (u64::from(b.addr) << 32 | u64::from(b.port)).rotate_left(17);
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Every published-port entry `state` gives.
fn all_port_entries(state: &State) -> impl Iterator<Item = (PortKey, Backend)> + '_ {
    state
        .containers
        .values()
        .flat_map(|c| port_entries(state, c))
}

/// The fingerprint of every published-port entry `state` gives, without making a map of them.
pub fn ports_fingerprint(state: &State) -> Fingerprint {
    all_port_entries(state).fold(Fingerprint::default(), |f, (k, b)| f.with(&k, &b))
}

/// The published-port entries that change from `before` to `after`.
#[derive(Debug, PartialEq)]
pub struct PortDelta {
    /// Entries to remove, with their values.
    pub removed: Vec<(PortKey, Backend)>,
    /// Entries to write, with the value each replaces.
    pub set: Vec<(PortKey, Backend, Option<Backend>)>,
    /// The fingerprint the maps have after.
    pub to: Fingerprint,
}

/// The published-port entries to change to go from `before` to `after`, found from the
/// containers that differ (their ports, first endpoint or its network) instead of from every
/// entry; checked against `after`'s fingerprint, None if it does not add up (a change this
/// missed: the caller applies every entry).
pub fn port_delta(
    before: &State,
    after: &State,
    from: Fingerprint,
    to: Fingerprint,
) -> Option<PortDelta> {
    let by_id = |s: &'_ State| -> std::collections::HashMap<String, String> {
        s.containers
            .values()
            .map(|c| (c.id.clone(), c.name.clone()))
            .collect()
    };
    let (old_ids, new_ids) = (by_id(before), by_id(after));
    let primary_net = |s: &State, c: &crate::model::state::Container| {
        c.endpoints.first().map(|e| {
            (
                e.ip,
                e.network.clone(),
                s.networks.get(&e.network).map(|n| n.internal),
            )
        })
    };
    let mut old = BTreeMap::new();
    let mut new = BTreeMap::new();
    for id in old_ids
        .keys()
        .chain(new_ids.keys().filter(|id| !old_ids.contains_key(*id)))
    {
        let b = old_ids.get(id).and_then(|n| before.containers.get(n));
        let a = new_ids.get(id).and_then(|n| after.containers.get(n));
        let same = match (b, a) {
            (Some(b), Some(a)) => {
                b.ports == a.ports && primary_net(before, b) == primary_net(after, a)
            }
            _ => false,
        };
        if same {
            continue;
        }
        if let Some(b) = b {
            old.extend(port_entries(before, b));
        }
        if let Some(a) = a {
            new.extend(port_entries(after, a));
        }
    }
    let (removed, set) = super::diff::difference(old.into_iter(), new.iter());
    let set: Vec<(PortKey, Backend, Option<Backend>)> =
        set.into_iter().map(|(k, v, o)| (*k, *v, o)).collect();
    let mut moved = from;
    for (k, b) in &removed {
        moved = moved.without(k, b);
    }
    for (k, b, old) in &set {
        if let Some(o) = old {
            moved = moved.without(k, o);
        }
        moved = moved.with(k, b);
    }
    (moved == to).then_some(PortDelta { removed, set, to })
}

pub fn desired(state: &State, host: &HostView, ports: Ports) -> Desired {
    // Thousands of veths on a busy host: look them up by name in an index.
    let index: std::collections::HashMap<&str, &crate::kernel::netlink::Link> =
        host.links.iter().map(|l| (l.name.as_str(), l)).collect();
    let by_name = |name: &str| index.get(name).copied();
    let mut flags = 0;
    if host.fast_path {
        flags |= CONFIG_FAST_PATH;
    }
    if host.forward_open {
        flags |= CONFIG_FORWARD_OPEN;
    }
    let mut d = Desired {
        config: Config {
            flags,
            nat_port_min: NAT_PORTS.0,
            nat_port_max: NAT_PORTS.1,
            ct_fill_max: 0,
            ct_owner_max: host.ct_endpoint_entries,
        },
        ports,
        portmap6: portmap6(state),
        ..Default::default()
    };
    d.host_addrs = host
        .addrs
        .iter()
        .filter(|(_, a)| !a.is_loopback())
        .map(|(_, a)| raw(*a))
        .collect();
    d.host_addrs6 = host
        .addrs6
        .iter()
        .filter(|(_, a)| !a.is_loopback())
        .map(|(_, a)| a.octets())
        .collect();
    for (_, index, xdp) in host.uplinks {
        if let Some((_, addr)) = host.addrs.iter().find(|(i, _)| i == index) {
            // XDP translates only where packets come from the wire with complete checksums:
            // native XDP on a physical NIC (no link kind). Elsewhere it hands them all to TC.
            let physical = host
                .links
                .iter()
                .any(|l| l.index == *index && l.kind.is_empty());
            let flags = if *xdp && physical && !host.xdp_generic {
                UPLINK_XDP_NAT
            } else {
                0
            };
            d.uplinks.insert(
                *index,
                Uplink {
                    addr: raw(*addr),
                    flags,
                },
            );
        }
    }
    for (_, index, _) in host.uplinks {
        // The first global address (not link-local, which never leaves the link).
        let global = host
            .addrs6
            .iter()
            .find(|(i, a)| i == index && (a.segments()[0] & 0xffc0) != 0xfe80);
        if let Some((_, a)) = global {
            d.uplinks6.insert(*index, a.octets());
        }
    }
    for net in state.networks.values() {
        let Some(bridge) = by_name(&net.bridge) else {
            continue;
        };
        let mut flags = 0;
        if net.icc {
            flags |= NET_ICC;
        }
        if net.masquerade {
            flags |= NET_MASQUERADE;
        }
        if net.internal {
            flags |= NET_INTERNAL;
        }
        if net.encrypted() {
            flags |= netctl_common::maps::NET_ENCRYPTED;
        }
        if net.ipv6.is_some() && crate::model::options::routed6(&net.options) {
            flags |= netctl_common::maps::NET_ROUTED6;
        } else if host.nat64 && net.ipv4.is_none() && net.masquerade && !net.internal {
            // IPv6-only: its containers reach IPv4 servers through NAT64.
            flags |= netctl_common::maps::NET_NAT64;
        }
        d.networks.insert(
            bridge.index,
            NetInfo {
                gateway: net.ipv4.as_ref().map_or(0, |v4| raw(v4.gateway)),
                flags,
                mac: mac6(&bridge.mac),
                _pad: [0; 2],
                gateway6: net.ipv6.as_ref().map_or([0; 16], |v| v.gateway.octets()),
            },
        );
        if let Some(v6) = &net.ipv6 {
            d.subnets6.insert(
                (u32::from(v6.subnet.prefix()), v6.subnet.network().octets()),
                bridge.index,
            );
        }
        if let Some(v4) = &net.ipv4 {
            d.subnets.insert(
                (u32::from(v4.subnet.prefix()), raw(v4.subnet.network())),
                bridge.index,
            );
        }
        if let Some(vni) = net.vni {
            d.overlay_vnis.insert(bridge.index, vni);
            d.overlay_bridges.insert(vni, bridge.index);
        }
    }
    if let Some(vx) = by_name(crate::kernel::topology::VXLAN_DEV) {
        d.overlay.vxlan_ifindex = vx.index;
    }
    // Only the instance's own device: an encrypted frame redirected into another link of
    // that name could leave in the clear.
    if let Some(wg) = by_name(crate::kernel::wireguard::DEV)
        .filter(|l| crate::kernel::wireguard::is_ours(l, host.group))
    {
        d.overlay.wg_ifindex = wg.index;
    }
    for a in crate::model::links::allowed(state) {
        let key = netctl_common::maps::LinkKey {
            src: raw(a.from),
            dst: raw(a.to),
            port: a.port.to_be(),
            proto: match a.proto {
                Proto::Tcp => proto::TCP,
                Proto::Udp => proto::UDP,
            },
            dir: if a.reply {
                netctl_common::maps::LINK_FROM_PORT
            } else {
                netctl_common::maps::LINK_TO_PORT
            },
        };
        d.links.insert(key, 1);
    }
    // 0: no socket programs on this host (nothing to scope).
    if host.host_cookie != 0 {
        d.sock_netns.insert(
            host.host_cookie,
            SockNetns {
                flags: NETNS_HOST,
                dns_addr: 0,
            },
        );
    }
    for c in state.containers.values() {
        if let Some(cookie) = host.container_cookies.get(&c.id) {
            d.sock_netns.insert(
                *cookie,
                SockNetns {
                    flags: NETNS_CONTAINER,
                    dns_addr: match dns_server(state, c) {
                        Some(IpAddr::V4(ip)) => raw(ip),
                        _ => 0,
                    },
                },
            );
        }
        for ep in &c.endpoints {
            let (Some(veth), Some(net)) = (by_name(&ep.host_veth), state.networks.get(&ep.network))
            else {
                continue;
            };
            let Some(bridge) = by_name(&net.bridge) else {
                continue;
            };
            let info = EndpointInfo {
                ifindex: veth.index,
                network: bridge.index,
                mac: crate::kernel::topology::parse_mac(&ep.mac),
                _pad: [0; 2],
            };
            if let Some(ip) = ep.ip {
                d.endpoints.insert(raw(ip), info);
            }
            d.veths.insert(veth.index, info);
            if let (Some(ip6), Some(_)) = (ep.ip6, &net.ipv6) {
                // Published ports lead to the first endpoint (`port_entries`).
                let first = c.endpoints.first().is_some_and(|f| f.network == ep.network);
                if first && !net.internal && crate::model::options::routed6(&net.options) {
                    for p in &c.ports {
                        let key = netctl_common::maps::Published6 {
                            addr: ip6.octets(),
                            port: p.container_port.to_be(),
                            proto: l4(p.proto),
                            _pad: 0,
                        };
                        d.published6.insert(key, 1);
                    }
                }
                if let Some(ip) = ep.ip {
                    d.ip6_of.insert(raw(ip), ip6.octets());
                }
                d.endpoints6.insert(ip6.octets(), info);
                d.endpoints6
                    .insert(crate::model::ipam6::link_local(info.mac).octets(), info);
            }
        }
    }
    d
}

/// Every published-port entry `state` gives, as a map.
pub fn portmap(state: &State) -> BTreeMap<PortKey, Backend> {
    all_port_entries(state).collect()
}

/// What to apply to the published-port maps, given what they were last derived from
/// (`applied`, the record's fingerprint) and, for a change, the state before it.
pub fn ports(state: &State, before: Option<&State>, applied: Option<Fingerprint>) -> Ports {
    let to = ports_fingerprint(state);
    if applied == Some(to) {
        return Ports::Unchanged(to);
    }
    let delta = before.and_then(|b| {
        let from = ports_fingerprint(b);
        (applied == Some(from))
            .then(|| port_delta(b, state, from, to))
            .flatten()
    });
    match delta {
        Some(d) => Ports::Delta(d),
        None => Ports::Full(portmap(state), to),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap as Map;

    use super::*;
    use crate::{
        model::ports::PortMapping,
        model::state::{Container, Endpoint, Network},
    };

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            mac: vec![2, 0, 0, 0, 0, index as u8],
            ..Default::default()
        }
    }

    fn net(name: &str, subnet: &str, internal: bool) -> Network {
        let subnet: ipnetwork::Ipv4Network = subnet.parse().unwrap();
        Network {
            id: name.into(),
            name: name.into(),
            driver: "bridge".into(),
            ipv4: Some(crate::model::state::Ipv4Subnet {
                subnet,
                gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
                ip_range: None,
                user_subnet: true,
            }),
            internal,
            icc: false,
            masquerade: true,
            mtu: 1500,
            bridge: format!("br-{name}"),
            options: Map::new(),
            created: 0,
            vni: None,
            ipv6: None,
        }
    }

    fn container(name: &str, network: &str, ip: &str, ports: Vec<PortMapping>) -> Container {
        Container {
            id: name.into(),
            name: name.into(),
            command: vec![],
            detached: true,
            created: 0,
            pid: None,
            pid_start: None,
            boot_id: None,
            host_network: false,
            engine_netns: None,
            engine_netns_start: None,
            engine: None,
            endpoints: vec![Endpoint {
                network: network.into(),
                endpoint_id: name.into(),
                ifname: "eth0".into(),
                host_veth: format!("veth-{name}"),
                ip: Some(ip.parse().unwrap()),
                ip6: None,
                mac: crate::model::state::mac_for(ip.parse().unwrap()),
                aliases: vec![],
            }],
            ports,
            options: Default::default(),
        }
    }

    #[test]
    fn published_ports_change_by_a_delta_that_adds_up() {
        let pm = |hp| PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED.into(),
            host_port: hp,
            container_port: 80,
            proto: Proto::Tcp,
        };
        let mut before = State::default();
        before
            .networks
            .insert("a".into(), net("a", "10.1.0.0/24", false));
        before
            .networks
            .insert("i".into(), net("i", "10.2.0.0/24", true));
        let mut c = |name: &str, network, ip, ports: Vec<u16>| {
            let c = container(name, network, ip, ports.into_iter().map(pm).collect());
            before.containers.insert(name.into(), c);
        };
        c("web", "a", "10.1.0.2", (20000..30000).collect());
        c("db", "a", "10.1.0.3", vec![9000]);
        c("hid", "i", "10.2.0.2", vec![9090]);
        c("idle", "a", "10.1.0.5", vec![7000]);
        let mut after = before.clone();
        // One more port; a port that moves to a new container; a network that stops being
        // internal (its container's port appears); a rename that changes nothing.
        after
            .containers
            .get_mut("web")
            .unwrap()
            .ports
            .push(pm(30000));
        after.containers.remove("db");
        after.containers.insert(
            "new".into(),
            container("new", "a", "10.1.0.4", vec![pm(9000)]),
        );
        after.networks.get_mut("i").unwrap().internal = false;
        let mut idle = after.containers.remove("idle").unwrap();
        idle.name = "idle2".into();
        after.containers.insert("idle2".into(), idle);

        let from = ports_fingerprint(&before);
        let of_map = portmap(&before)
            .iter()
            .fold(Fingerprint::default(), |f, (k, b)| f.with(k, b));
        assert_eq!(from, of_map);
        assert_eq!(
            from.count, 10_002,
            "the internal network's port is not published"
        );
        let Ports::Delta(d) = ports(&after, Some(&before), Some(from)) else {
            panic!("a delta from the recorded state")
        };
        let key = |p: u16| PortKey {
            addr: 0,
            port: p.to_be(),
            proto: proto::TCP,
            _pad: 0,
        };
        let to = |ip: &str| Backend {
            addr: raw(ip.parse().unwrap()),
            port: 80u16.to_be(),
            _pad: 0,
        };
        assert!(d.removed.is_empty());
        let mut set = d.set.clone();
        set.sort_by_key(|(k, _, _)| u16::from_be(k.port));
        assert_eq!(
            set,
            vec![
                (key(9000), to("10.1.0.4"), Some(to("10.1.0.3"))),
                (key(9090), to("10.2.0.2"), None),
                (key(30000), to("10.1.0.2"), None),
            ]
        );
        // Applied to the entries before, it gives the entries after.
        let mut map = portmap(&before);
        for (k, _) in &d.removed {
            map.remove(k);
        }
        for (k, v, _) in &d.set {
            map.insert(*k, *v);
        }
        assert_eq!(map, portmap(&after));
        assert_eq!(d.to, ports_fingerprint(&after));
        assert_eq!(d.to.count, 10_004);
        // Nothing to do when the maps hold it already; everything when the record is unknown
        // or from another state.
        assert!(matches!(
            ports(&after, Some(&before), Some(d.to)),
            Ports::Unchanged(_)
        ));
        for applied in [None, Some(Fingerprint { sum: 1, count: 2 })] {
            assert_eq!(
                ports(&after, Some(&before), applied),
                Ports::Full(portmap(&after), ports_fingerprint(&after))
            );
        }
        // Removing a container takes its entries.
        let mut gone = after.clone();
        gone.containers.remove("web");
        let Ports::Delta(d) = ports(&gone, Some(&after), Some(ports_fingerprint(&after))) else {
            panic!("a delta")
        };
        assert_eq!(d.removed.len(), 10_001);
        assert!(d.set.is_empty());
        assert_eq!(d.to.count, 3);
    }

    #[test]
    fn derives_every_map_from_the_state() {
        let mut state = State::default();
        state
            .networks
            .insert("a".into(), net("a", "10.1.0.0/24", false));
        state
            .networks
            .insert("i".into(), net("i", "10.2.0.0/24", true));
        let pm = |hp, cp| PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED.into(),
            host_port: hp,
            container_port: cp,
            proto: Proto::Tcp,
        };
        state.containers.insert(
            "web".into(),
            container("web", "a", "10.1.0.2", vec![pm(8080, 80)]),
        );
        state.containers.insert(
            "hid".into(),
            container("hid", "i", "10.2.0.2", vec![pm(9090, 90)]),
        );
        let links = vec![
            link(1, "lo"),
            link(2, "up0"),
            link(3, "br-a"),
            link(4, "br-i"),
            link(5, "veth-web"),
            link(6, "veth-hid"),
        ];
        let addrs = vec![
            (1, Ipv4Addr::LOCALHOST),
            (2, "192.0.2.1".parse().unwrap()),
            (3, "10.1.0.1".parse().unwrap()),
        ];
        let uplinks = vec![("up0".to_string(), 2, true)];
        let d = desired(
            &state,
            &HostView {
                links: &links,
                addrs: &addrs,
                addrs6: &[],
                uplinks: &uplinks,
                fast_path: true,
                host_cookie: 1,
                container_cookies: &[("web".to_string(), 7), ("hid".to_string(), 8)].into(),
                xdp_generic: false,
                forward_open: true,
                ct_endpoint_entries: 0,
                group: 0,
                nat64: true,
            },
            Ports::Full(portmap(&state), ports_fingerprint(&state)),
        );

        assert_eq!(d.host_addrs.len(), 2, "loopback excluded");
        assert_eq!(
            d.uplinks[&2],
            Uplink {
                addr: raw("192.0.2.1".parse().unwrap()),
                flags: UPLINK_XDP_NAT
            }
        );
        assert_eq!(
            d.networks[&3].flags, NET_MASQUERADE,
            "icc off, not internal"
        );
        assert_eq!(d.networks[&4].flags, NET_MASQUERADE | NET_INTERNAL);
        assert_eq!(d.networks[&3].mac, [2, 0, 0, 0, 0, 3]);
        assert_eq!(d.subnets[&(24, raw("10.1.0.0".parse().unwrap()))], 3);
        assert_eq!(
            d.endpoints[&raw("10.1.0.2".parse().unwrap())],
            EndpointInfo {
                ifindex: 5,
                network: 3,
                mac: [0x02, 0x42, 10, 1, 0, 2],
                _pad: [0; 2],
            }
        );
        // One published port: the internal network's container publishes nothing.
        let Ports::Full(portmap, _) = &d.ports else {
            panic!("all entries asked for")
        };
        assert_eq!(portmap.len(), 1);
        let (k, b) = portmap.iter().next().unwrap();
        assert_eq!(
            (k.addr, u16::from_be(k.port), k.proto),
            (0, 8080, proto::TCP)
        );
        assert_eq!(
            (from_raw(b.addr), u16::from_be(b.port)),
            ("10.1.0.2".parse().unwrap(), 80)
        );
        assert_eq!(d.config.flags, CONFIG_FAST_PATH | CONFIG_FORWARD_OPEN);
        // The socket programs know the host and both containers; web asks a/s gateway at
        // 127.0.0.11.
        assert_eq!(d.sock_netns[&1].flags, NETNS_HOST);
        assert_eq!(
            d.sock_netns[&7],
            SockNetns {
                flags: NETNS_CONTAINER,
                dns_addr: raw("10.1.0.1".parse().unwrap())
            }
        );
        assert_eq!(d.sock_netns.len(), 3);
    }
}
