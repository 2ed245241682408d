//! What a container may send (Docker's isolation rules), checked where every packet a
//! container sends passes: TC ingress of its host-side veth.

use netctl_common::{
    drop::DropReason,
    maps::{EndpointInfo, LinkKey, NetInfo, LINK_FROM_PORT, LINK_TO_PORT, NET_ICC, NET_INTERNAL},
    overlay::VXLAN_PORT,
    proto,
};

use aya_ebpf::maps::lpm_trie::Key;
use network_types::{
    arp::ArpHdr,
    eth::{EthHdr, EtherType},
};

use crate::{
    maps::{self, LINKS, SUBNETS},
    packet::Packet,
    parse::{Hdr, Icmp, ETH_LEN},
};

/// Where a packet from a container is going.
pub enum Dest {
    /// An address of the host (the gateway, the uplink, …).
    Host,
    /// A container address of the same network.
    SameNetwork,
    /// Anything else that may pass: the outside world.
    Outside,
}

/// The sending endpoint: its source address and MAC must be its own, on the veth it came
/// from. Returns the frame's destination MAC too.
#[inline(always)]
pub fn sender<P: Packet>(
    p: &P,
    h: &Hdr,
    ifindex: u32,
) -> Result<(EndpointInfo, NetInfo, [u8; 6]), DropReason> {
    let ep = maps::endpoint(h.saddr).ok_or(DropReason::Spoofed)?;
    if ep.ifindex != ifindex {
        return Err(DropReason::Spoofed);
    }
    let eth: EthHdr = p.load(0).ok_or(DropReason::Malformed)?;
    if eth.src_addr != ep.mac {
        return Err(DropReason::Spoofed);
    }
    let net = maps::network(ep.network).ok_or(DropReason::Spoofed)?;
    Ok((ep, net, eth.dst_addr))
}

/// Where a container's packet may go. `dst_mac`: the frame's destination, which with ICC off
/// must be the gateway (the bridge) — or, on a legacy link, the linked container — so that
/// nothing is bridged to another container around the IPv4 rules (broadcast, multicast, a
/// neighbour's MAC under an outside address).
#[inline(always)]
pub fn check(
    h: &Hdr,
    ep: &EndpointInfo,
    net: &NetInfo,
    dst_mac: &[u8; 6],
) -> Result<Dest, DropReason> {
    let internal = net.flags & NET_INTERNAL != 0;
    if tunnel_injection(h) {
        return Err(DropReason::TunnelInjection);
    }
    let icc = net.flags & NET_ICC != 0;
    if maps::is_host_addr(h.daddr) {
        // An internal network reaches its own gateway's DNS, nothing else of the host.
        if internal && (h.daddr != net.gateway || !is_dns(h)) {
            return Err(DropReason::Internal);
        }
        if !icc && *dst_mac != net.mac {
            return Err(DropReason::IccOff);
        }
        return Ok(Dest::Host);
    }
    let key = Key::new(32, h.daddr);
    if let Some(dst_net) = SUBNETS.get(&key) {
        if *dst_net != ep.network {
            return Err(DropReason::Isolation);
        }
        if !icc {
            // Only a legacy link lets a packet through, addressed to the linked container
            // itself (or into the tunnel towards it).
            let to_target = maps::endpoint(h.daddr).is_some_and(|t| t.mac == *dst_mac)
                || crate::overlay::remote(h.daddr).is_some();
            if !linked(h) || !to_target {
                return Err(DropReason::IccOff);
            }
        }
        return Ok(Dest::SameNetwork);
    }
    if !icc && *dst_mac != net.mac {
        return Err(DropReason::IccOff);
    }
    // A container of an overlay network this host has no part of.
    if crate::overlay::remote(h.daddr).is_some() {
        return Err(DropReason::Isolation);
    }
    if internal {
        return Err(DropReason::Internal);
    }
    Ok(Dest::Outside)
}

/// What may reach a container through its veth (the bridge, or the host's routing): a
/// container of its network that may talk to it, the host (an internal network: its
/// gateway only), or a tracked flow — nothing that came in by an interface without netctl's
/// programs, and nothing that got around a sender's checks.
#[inline(always)]
pub fn receiver<P: Packet>(p: &P, h: &Hdr) -> Result<(), DropReason> {
    let Some(dst) = maps::endpoint(h.daddr) else {
        return Ok(()); // not for a container address: broadcast, the bridge's own
    };
    let net = maps::network(dst.network).ok_or(DropReason::NoWayIn)?;
    if let Some(src) = maps::endpoint(h.saddr) {
        if src.network != dst.network {
            return Err(DropReason::Isolation);
        }
        if net.flags & NET_ICC == 0 && !linked(h) {
            return Err(DropReason::IccOff);
        }
        return Ok(());
    }
    if maps::is_host_addr(h.saddr) {
        if net.flags & NET_INTERNAL != 0 && h.saddr != net.gateway {
            return Err(DropReason::Internal);
        }
        return Ok(());
    }
    let tracked = if h.icmp == Icmp::Error {
        crate::nat::quoted_flow(p, h)
    } else {
        crate::ct::find(&h.key().reversed()).is_some()
    };
    if !tracked {
        return Err(DropReason::NoWayIn);
    }
    Ok(())
}

/// A DNS query (UDP or TCP port 53).
#[inline(always)]
fn is_dns(h: &Hdr) -> bool {
    (h.proto == proto::UDP || h.proto == proto::TCP) && h.dport == 53u16.to_be()
}

/// A container sending to the VXLAN port of this host or of a cluster peer: with the host's
/// address (masquerade) it would pass for the host's own tunnel traffic there.
#[inline(always)]
fn tunnel_injection(h: &Hdr) -> bool {
    to_tunnel_port(h.proto, h.dport, h.daddr)
}

/// [`tunnel_injection`] by its parts, for NAT64 too (an IPv6 container's packet to
/// 64:ff9b::/96 leaves with the host's IPv4 address as well).
#[inline(always)]
pub fn to_tunnel_port(l4: u8, dport: u16, daddr: u32) -> bool {
    l4 == proto::UDP
        && dport == VXLAN_PORT.to_be()
        && (crate::overlay::is_peer(daddr) || crate::overlay::active() && maps::is_host_addr(daddr))
}

/// A legacy link lets this packet through ICC=false: the linking container to one of the
/// target's exposed ports, or the target's reply from it.
#[inline(always)]
fn linked(h: &Hdr) -> bool {
    let mut key = LinkKey {
        src: h.saddr,
        dst: h.daddr,
        port: h.dport,
        proto: h.proto,
        dir: LINK_TO_PORT,
    };
    // SAFETY: read-only lookups of a map the controller fills.
    if unsafe { LINKS.get(key).is_some() } {
        return true;
    }
    key.port = h.sport;
    key.dir = LINK_FROM_PORT;
    unsafe { LINKS.get(key).is_some() }
}

/// A frame that is not IPv4. ARP passes when it speaks for the sender's own address (or for
/// none: an address probe), so a container can neither poison its neighbours' caches nor
/// talk anything else around the IPv4 rules: IPv6 (link-local included) and other
/// protocols are dropped until the isolation rules understand them.
#[inline(always)]
pub fn non_ipv4<P: Packet>(p: &P, ethertype: u16, ifindex: u32) -> Result<(), DropReason> {
    if ethertype != EtherType::Arp as u16 {
        return Err(DropReason::NotIpv4);
    }
    let eth: EthHdr = p.load(0).ok_or(DropReason::Malformed)?;
    let arp: ArpHdr = p.load(ETH_LEN).ok_or(DropReason::Malformed)?;
    // The sender's MAC is the frame's (a probe carries no address to know the endpoint by).
    if arp.sha != eth.src_addr {
        return Err(DropReason::Spoofed);
    }
    let spa = u32::from_ne_bytes(arp.spa);
    if spa == 0 {
        return Ok(());
    }
    match maps::endpoint(spa) {
        Some(ep) if ep.ifindex == ifindex && ep.mac == eth.src_addr => Ok(()),
        _ => Err(DropReason::Spoofed),
    }
}
