//! The kernel objects behind the state: a bridge per network, a veth pair per endpoint, a
//! namespace per container. Every link netctl creates carries this instance's interface group
//! from birth, so `sync` can tell its own orphans from anyone else's links.

use std::{collections::BTreeMap, net::Ipv4Addr, os::fd::AsRawFd, path::Path};

use anyhow::{Context, Result};

use crate::{
    kernel::netlink::{Link, Netlink},
    kernel::netns,
    model::state::{Container, Endpoint, Network},
};

pub use crate::model::instance::{instance_group, GROUP_FLAG};

/// The VXLAN device of overlay networks (one per instance, collect-metadata mode).
pub const VXLAN_DEV: &str = "nctl-vxlan";
/// IANA's VXLAN port, as Docker's overlay driver uses.
pub const VXLAN_PORT: u16 = netctl_common::overlay::VXLAN_PORT;

/// Whether this host has overlay networks (and so needs the VXLAN device).
pub fn needs_vxlan(networks: &BTreeMap<String, Network>) -> bool {
    vxlan_mtu(networks).is_some()
}

/// The VXLAN device's MTU: the largest of the overlay networks' (each made from its creating
/// host's underlay MTU less the encapsulation, or given), None without overlay networks.
pub fn vxlan_mtu(networks: &BTreeMap<String, Network>) -> Option<u32> {
    networks
        .values()
        .filter(|n| n.vni.is_some() && !n.encrypted())
        .map(|n| n.mtu)
        .max()
}

/// The WireGuard device's MTU: the largest of the encrypted overlays', None without them.
pub fn wireguard_mtu(networks: &BTreeMap<String, Network>) -> Option<u32> {
    networks
        .values()
        .filter(|n| n.vni.is_some() && n.encrypted())
        .map(|n| n.mtu)
        .max()
}

/// The links the state says are this instance's: bridges, container veths, the VXLAN device.
pub fn own_links(state: &crate::model::state::State) -> std::collections::BTreeSet<String> {
    // The container ends of engine veths that dockerd has not moved yet.
    let peers: Vec<String> = state
        .containers
        .values()
        .filter(|c| c.engine.as_deref() == Some("docker"))
        .flat_map(|c| c.endpoints.iter().map(|e| engine_peer_name(&e.endpoint_id)))
        .collect();
    state
        .networks
        .values()
        .map(|n| n.bridge.as_str())
        .chain(
            state
                .containers
                .values()
                .flat_map(|c| c.endpoints.iter().map(|e| e.host_veth.as_str())),
        )
        .chain(peers.iter().map(String::as_str))
        .chain(needs_vxlan(&state.networks).then_some(VXLAN_DEV))
        .chain(wireguard_mtu(&state.networks).map(|_| crate::kernel::wireguard::DEV))
        .map(str::to_string)
        .collect()
}

/// Every link of the namespace, the state's container veths with their index only (see
/// [`Netlink::links_sparing`]: a full dump is slow with thousands of containers).
pub fn scan_links(
    nl: &Netlink,
    state: &crate::model::state::State,
    group: u32,
) -> Result<Vec<Link>> {
    let veths: std::collections::HashSet<&str> = state
        .containers
        .values()
        .flat_map(|c| c.endpoints.iter().map(|e| e.host_veth.as_str()))
        .collect();
    nl.links_sparing(&veths, group)
}

/// The container end of an engine's veth while it is still in the host namespace (dockerd
/// moves it into the sandbox and renames it).
pub fn engine_peer_name(endpoint_id: &str) -> String {
    format!("vpeer{}", &endpoint_id[..8])
}

/// Host-side veth name of an endpoint: "veth" + 8 hex digits of its id (Docker uses "veth").
pub fn host_veth_name(endpoint_id: &str) -> String {
    format!("veth{}", &endpoint_id[..8])
}

/// A unicast MAC in the usual notation (six pairs of hex digits, colons between).
pub fn is_unicast_mac(m: &str) -> bool {
    let bytes: Option<Vec<u8>> = m
        .split(':')
        .map(|p| (p.len() == 2).then(|| u8::from_str_radix(p, 16).ok())?)
        .collect();
    bytes.is_some_and(|b| b.len() == 6 && b[0] & 1 == 0)
}

pub use crate::model::addr::parse_mac;

fn random_mac() -> [u8; 6] {
    let mut mac: [u8; 6] = crate::model::state::random_bytes().expect("reading /dev/urandom");
    mac[0] = (mac[0] & 0xfe) | 0x02; // unicast, locally administered
    mac
}

/// Creates a network's bridge with its gateway address, and brings it up.
pub fn create_bridge(nl: &Netlink, net: &Network, group: u32) -> Result<()> {
    let index = nl.add_bridge(&net.bridge, net.mtu, group)?;
    let res = (|| {
        // A fixed MAC: a bridge otherwise takes its lowest port's, and containers' ARP entries
        // for the gateway go stale as ports come and go.
        nl.set_mac(index, random_mac())?;
        if let Some(v4) = &net.ipv4 {
            nl.add_address(index, v4.gateway, v4.subnet.prefix())?;
        }
        if let Some(v6) = &net.ipv6 {
            // IPv6 on, whatever the host's default for new interfaces says; and the bridge
            // never learns a route from what a container sends (a rogue router
            // advertisement would give the host a default route into a container).
            ipv6_sysctl(&net.bridge, "disable_ipv6", "0")?;
            ipv6_sysctl(&net.bridge, "accept_ra", "0")?;
            // Nor is a duplicate address probe a container sends able to make the bridge
            // give up its link-local address (and that address is there at once).
            ipv6_sysctl(&net.bridge, "accept_dad", "0")?;
            bridge_routes_ipv6(&net.bridge)?;
            nl.add_address6(index, v6.gateway, v6.subnet.prefix())?;
        }
        nl.set_up(index)
    })();
    if res.is_err() {
        let _ = nl.del_link(index);
    }
    res.with_context(|| format!("setting up bridge {}", net.bridge))
}

/// Whether this endpoint is the one that carries the container's IPv4 (`v6` false) or IPv6
/// default route: the first endpoint with an address of that family on a network that has
/// a way out (an IPv6-only network's endpoint carries no IPv4 route).
pub fn is_gateway_endpoint(
    networks: &BTreeMap<String, Network>,
    c: &Container,
    ep: &Endpoint,
    v6: bool,
) -> bool {
    c.endpoints
        .iter()
        .filter(|e| if v6 { e.ip6.is_some() } else { e.ip.is_some() })
        .find(|e| networks.get(&e.network).is_some_and(|n| !n.internal))
        .is_some_and(|e| e.endpoint_id == ep.endpoint_id)
}

/// Creates an endpoint: the veth pair (host side on the bridge, peer named `ep.ifname` in the
/// container), the address, the MAC, and the default route when `default_route`. `made` is
/// the host end of a pair made already (a spare's, see `kernel::dataplane::spares`), with the
/// programs on it.
pub fn create_endpoint(
    nl: &Netlink,
    netns_path: &Path,
    net: &Network,
    ep: &Endpoint,
    default_route: bool,
    group: u32,
    made: Option<u32>,
) -> Result<()> {
    let bridge = nl.link(&net.bridge)?.with_context(|| {
        format!(
            "bridge {} of network {} is missing: run `netctl sync`",
            net.bridge, net.name
        )
    })?;
    let index = match made {
        Some(index) => index,
        None => {
            let ns = netns::open(netns_path)?;
            nl.add_veth(&ep.host_veth, &ep.ifname, ns.as_raw_fd(), net.mtu, group)?
        }
    };
    crate::base::failpoint::step("endpoint: veth created");
    let res = (|| {
        if made.is_some() {
            // A spare's, made before its network was known (the same MTU is no change).
            nl.set_mtu(index, net.mtu)?;
        }
        nl.set_controller(index, bridge.index)?;
        nl.pin_bridge_port(index, parse_mac(&ep.mac))?;
        nl.set_up(index)?;
        configure_container_side(netns_path, ep, net, default_route)
    })();
    if res.is_err() {
        // Deleting one end of a veth deletes both.
        let _ = nl.del_link(index);
    }
    res.with_context(|| format!("setting up {} of network {}", ep.ifname, net.name))
}

fn configure_container_side(
    netns_path: &Path,
    ep: &Endpoint,
    net: &Network,
    default_route: bool,
) -> Result<()> {
    let ifname = ep.ifname.clone();
    let v4 = net
        .ipv4
        .as_ref()
        .zip(ep.ip)
        .map(|(n, ip)| (ip, n.subnet.prefix(), n.gateway));
    let v6 = net
        .ipv6
        .as_ref()
        .zip(ep.ip6)
        .map(|(n, ip)| (ip, n.subnet.prefix(), n.gateway));
    let route6 = !net.internal;
    let mtu = net.mtu;
    let mac = parse_mac(&ep.mac);
    netns::run_in(netns_path, move || {
        let nl = Netlink::new()?;
        let lo = nl.link("lo")?.context("no lo in the container namespace")?;
        nl.set_up(lo.index)?;
        let link = nl
            .link(&ifname)?
            .with_context(|| format!("{ifname} did not appear in the container namespace"))?;
        match v6 {
            // Addresses from netctl only: no router advertisements (a container's own
            // would be dropped anyway), no duplicate detection (each address is handed out
            // once), and the link-local address derived from the MAC, which the datapath
            // knows the container by.
            Some(_) => {
                ipv6_sysctl(&ifname, "disable_ipv6", "0")?;
                ipv6_sysctl(&ifname, "accept_ra", "0")?;
                ipv6_sysctl(&ifname, "accept_dad", "0")?;
                ipv6_sysctl(&ifname, "addr_gen_mode", "0")?;
            }
            // No IPv6 on an interface of an IPv4 network, as Docker (26+) does: the kernel
            // would give it a link-local address and send solicitations the datapath drops,
            // and a container would have an IPv6 surface nobody configured.
            None => disable_ipv6(&ifname)?,
        }
        if link.mtu != mtu {
            // A spare's peer (made before its network was known).
            nl.set_mtu(link.index, mtu)?;
        }
        nl.set_mac(link.index, mac)?;
        if let Some((ip, prefix, _)) = v4 {
            nl.add_address(link.index, ip, prefix)?;
        }
        nl.set_up(link.index)?;
        if let Some((_, _, gw)) = v4.filter(|_| default_route) {
            nl.add_default_route(gw)?;
        }
        if let Some((ip6, prefix6, gw6)) = v6 {
            nl.add_address6(link.index, ip6, prefix6)?;
            // The first network with IPv6 and a way out carries the IPv6 default route
            // (a later one finds it there).
            if route6 {
                nl.add_default_route6(gw6)?;
            }
        }
        Ok(())
    })
}

/// Turns on IPv6 forwarding of a dual-stack network's bridge if it is off (a bridge made by
/// an older netctl); returns whether it changed anything. The datapath routes the network's
/// IPv6 beyond the host itself, and the FIB helper asks for forwarding on the interface a
/// packet arrives by: on for the bridge only, never the host-wide switch.
pub fn bridge_routes_ipv6(bridge: &str) -> Result<bool> {
    let path = format!("/proc/sys/net/ipv6/conf/{bridge}/forwarding");
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
        return Ok(false);
    }
    ipv6_sysctl(bridge, "forwarding", "1")?;
    Ok(true)
}

/// Sets `net.ipv6.conf.IFNAME.KEY` in the calling thread's namespace.
fn ipv6_sysctl(ifname: &str, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/{key}");
    std::fs::write(&path, value).with_context(|| {
        format!("setting {path} to {value} (IPv6 networks need a kernel with IPv6)")
    })
}

/// Turns IPv6 off on `ifname` of the calling thread's namespace (before it is up, so that
/// it never sends an IPv6 packet). A kernel without IPv6 has nothing to turn off.
fn disable_ipv6(ifname: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r.with_context(|| format!("turning IPv6 off on {ifname} ({path})")),
    }
}

/// Adds the default route via `gateway` in the container if it has none (after the endpoint
/// that carried it was disconnected).
pub fn ensure_default_route(netns_path: &Path, gateway: Ipv4Addr) -> Result<()> {
    netns::run_in(netns_path, move || {
        let nl = Netlink::new()?;
        if nl.default_route_interfaces()?.is_empty() {
            nl.add_default_route(gateway)?;
        }
        Ok(())
    })
}

/// Removes a container's kernel objects: its processes must already be stopped. Best effort:
/// every step runs, the first error is returned.
pub fn remove_container(nl: &Netlink, netns_path: Option<&Path>, c: &Container) -> Result<()> {
    let mut first_err = None;
    for ep in &c.endpoints {
        if let Err(e) = nl.del_link_by_name(&ep.host_veth) {
            first_err.get_or_insert(e);
        }
    }
    if let Some(Err(e)) = netns_path.map(netns::remove) {
        first_err.get_or_insert(e);
    }
    first_err.map_or(Ok(()), Err)
}
