//! The maps the programs read, derived from the state in one place ([`desired`]) and applied
//! as a difference ([`crate::kernel::dataplane::Dataplane::apply`]): unchanged entries are not rewritten.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use netctl_common::{
    maps::{
        Backend, Config, EndpointInfo, NetInfo, PortKey, Uplink, CONFIG_FAST_PATH,
        CONFIG_FORWARD_OPEN, NET_ICC, NET_INTERNAL, NET_MASQUERADE, UPLINK_XDP_NAT,
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
    pub portmap: BTreeMap<PortKey, Backend>,
    pub host_addrs: BTreeSet<u32>,
    pub uplinks: BTreeMap<u32, Uplink>,
    pub endpoints: BTreeMap<u32, EndpointInfo>,
    pub networks: BTreeMap<u32, NetInfo>,
    /// (prefix length, network address) → bridge ifindex.
    pub subnets: BTreeMap<(u32, u32), u32>,
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
pub fn dns_server(state: &State, c: &crate::model::state::Container) -> Option<Ipv4Addr> {
    if c.engine.as_deref() == Some("docker") {
        return None; // dockerd answers 127.0.0.11 in its containers itself
    }
    c.endpoints
        .iter()
        .filter(|e| e.network != crate::model::networks::DEFAULT_NETWORK)
        .find_map(|e| state.networks.get(&e.network))
        .map(|n| n.gateway)
}

pub fn desired(state: &State, host: &HostView) -> Desired {
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
        ..Default::default()
    };
    d.host_addrs = host
        .addrs
        .iter()
        .filter(|(_, a)| !a.is_loopback())
        .map(|(_, a)| raw(*a))
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
        d.networks.insert(
            bridge.index,
            NetInfo {
                gateway: raw(net.gateway),
                flags,
                mac: mac6(&bridge.mac),
                _pad: [0; 2],
            },
        );
        d.subnets.insert(
            (u32::from(net.subnet.prefix()), raw(net.subnet.network())),
            bridge.index,
        );
        if let Some(vni) = net.vni {
            d.overlay_vnis.insert(bridge.index, vni);
            d.overlay_bridges.insert(vni, bridge.index);
        }
    }
    if let Some(vx) = by_name(crate::kernel::topology::VXLAN_DEV) {
        d.overlay.vxlan_ifindex = vx.index;
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
                    dns_addr: dns_server(state, c).map_or(0, raw),
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
            d.endpoints.insert(
                raw(ep.ip),
                EndpointInfo {
                    ifindex: veth.index,
                    network: bridge.index,
                    mac: crate::kernel::topology::parse_mac(&ep.mac),
                    _pad: [0; 2],
                },
            );
        }
        // Published ports lead to the first endpoint, as Docker's do; never into an
        // internal network.
        let Some(primary) = c.endpoints.first() else {
            continue;
        };
        if state
            .networks
            .get(&primary.network)
            .is_none_or(|n| n.internal)
        {
            continue;
        }
        for p in &c.ports {
            let key = PortKey {
                addr: raw(p.host_ip),
                port: p.host_port.to_be(),
                proto: match p.proto {
                    Proto::Tcp => proto::TCP,
                    Proto::Udp => proto::UDP,
                },
                _pad: 0,
            };
            d.portmap.insert(
                key,
                Backend {
                    addr: raw(primary.ip),
                    port: p.container_port.to_be(),
                    _pad: 0,
                },
            );
        }
    }
    d
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
            subnet,
            gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
            ip_range: None,
            internal,
            icc: false,
            masquerade: true,
            mtu: 1500,
            bridge: format!("br-{name}"),
            options: Map::new(),
            created: 0,
            user_subnet: true,
            vni: None,
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
                ip: ip.parse().unwrap(),
                mac: crate::model::state::mac_for(ip.parse().unwrap()),
                aliases: vec![],
            }],
            ports,
            options: Default::default(),
        }
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
            host_ip: Ipv4Addr::UNSPECIFIED,
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
                uplinks: &uplinks,
                fast_path: true,
                host_cookie: 1,
                container_cookies: &[("web".to_string(), 7), ("hid".to_string(), 8)].into(),
                xdp_generic: false,
                forward_open: true,
                ct_endpoint_entries: 0,
            },
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
        assert_eq!(d.portmap.len(), 1);
        let (k, b) = d.portmap.iter().next().unwrap();
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
