//! Overlay networks, tunnel mode as Cilium does it: one collect-metadata VXLAN device per
//! host; a container's frame for a container on another host gets its tunnel key (that
//! host, the network's VNI) from `OVERLAY_REMOTES` and goes to the device; what comes out of
//! the device is checked against the same map and handed straight to the container. ARP for
//! remote containers is answered here, so nothing floods and nothing is learned.

use aya_ebpf::{
    bindings::bpf_tunnel_key,
    helpers::{
        bpf_check_mtu, bpf_redirect, bpf_skb_change_head, bpf_skb_get_tunnel_key,
        bpf_skb_set_tunnel_key,
    },
    macros::map,
    maps::{Array, HashMap},
    programs::TcContext,
};
use netctl_common::{
    drop::DropReason,
    features::CHECK_MTU,
    maps::{NetInfo, NET_ENCRYPTED, NET_ICC},
    overlay::*,
};
use network_types::arp::ArpHdr;

use crate::{
    maps,
    packet::{Packet, Tc},
    parse::{Hdr, ETH_LEN},
    redirect::container_mac,
};

#[map(name = "OVERLAY_REMOTES")]
pub static OVERLAY_REMOTES: HashMap<u32, Remote> =
    HashMap::with_max_entries(OVERLAY_REMOTES_MAX, 0);

#[map(name = "OVERLAY_VNIS")]
pub static OVERLAY_VNIS: HashMap<u32, u32> = HashMap::with_max_entries(OVERLAY_NETS_MAX, 0);

#[map(name = "OVERLAY_BRIDGES")]
pub static OVERLAY_BRIDGES: HashMap<u32, u32> = HashMap::with_max_entries(OVERLAY_NETS_MAX, 0);

#[map(name = "OVERLAY_CONFIG")]
pub static OVERLAY_CONFIG: Array<OverlayConfig> = Array::with_max_entries(1, 0);

#[map(name = "OVERLAY_PEERS")]
pub static OVERLAY_PEERS: HashMap<u32, u32> = HashMap::with_max_entries(OVERLAY_PEERS_MAX, 0);

const TUNNEL_TTL: u8 = 64;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
// Field offsets in an Ethernet/IPv4 ARP packet, after the Ethernet header.
const ARP_OPER: usize = ETH_LEN + 6;
const ARP_SHA: usize = ETH_LEN + 8;
const ARP_SPA: usize = ETH_LEN + 14;
const ARP_THA: usize = ETH_LEN + 18;
const ARP_TPA: usize = ETH_LEN + 24;

/// The underlay address of another cluster host that has containers.
#[inline(always)]
pub fn is_peer(addr: u32) -> bool {
    // SAFETY: read-only lookup of a map the controller fills.
    unsafe { OVERLAY_PEERS.get(addr).is_some() }
}

/// Whether this host runs the overlay's VXLAN device.
#[inline(always)]
pub fn active() -> bool {
    OVERLAY_CONFIG.get(0).is_some_and(|c| c.vxlan_ifindex != 0)
}

/// A container on another host (any overlay network).
#[inline(always)]
pub fn remote(addr: u32) -> Option<Remote> {
    // SAFETY: read-only copy of a value the controller writes whole.
    unsafe { OVERLAY_REMOTES.get(addr).copied() }
}

/// The container at `addr` on another host, if it is on the overlay network whose local
/// bridge is `network`.
#[inline(always)]
pub fn peer(addr: u32, network: u32) -> Option<Remote> {
    let vni = vni(network)?;
    remote(addr).filter(|r| r.vni == vni)
}

/// The VNI of the overlay network whose local bridge is `network`.
#[inline(always)]
pub fn vni(network: u32) -> Option<u32> {
    // SAFETY: read-only copy of a value the controller writes whole.
    unsafe { OVERLAY_VNIS.get(network).copied() }
}

/// Toward the remote container's host: an encrypted network's frame into the WireGuard
/// device (whose peers' allowed addresses are their containers'), any other into the VXLAN
/// device with its tunnel key. Never an encrypted network's frame into plain VXLAN.
#[inline(always)]
pub fn send(ctx: &TcContext, r: &Remote, net: &NetInfo) -> Result<i32, DropReason> {
    if net.flags & NET_ENCRYPTED != 0 {
        let dev = OVERLAY_CONFIG.get(0).map_or(0, |c| c.wg_ifindex);
        if dev == 0 {
            return Err(DropReason::Unencrypted);
        }
        // The device is L3: the frame's Ethernet header does not count against its MTU, and
        // the redirect strips it.
        check_mtu(ctx, dev, -(ETH_LEN as i32))?;
        // SAFETY: helper call with plain values.
        return Ok(unsafe { bpf_redirect(dev, 0) } as i32);
    }
    encap(ctx, r)
}

/// The device's MTU is the overlay's: a larger frame (its sender raised its own MTU) is
/// refused here rather than fragmented on the underlay.
#[inline(always)]
fn check_mtu(ctx: &TcContext, dev: u32, len_diff: i32) -> Result<(), DropReason> {
    if crate::features::has(CHECK_MTU) {
        let mut len = 0u32;
        // SAFETY: helper call on the program's skb with a length on the stack.
        if unsafe { bpf_check_mtu(ctx.skb.skb as *mut _, dev, &mut len, len_diff, 0) } != 0 {
            return Err(DropReason::TunnelMtu);
        }
    }
    Ok(())
}

/// Into the VXLAN tunnel toward the remote container's host.
#[inline(always)]
pub fn encap(ctx: &TcContext, r: &Remote) -> Result<i32, DropReason> {
    let dev = OVERLAY_CONFIG.get(0).map_or(0, |c| c.vxlan_ifindex);
    if dev == 0 {
        return Err(DropReason::Tunnel);
    }
    check_mtu(ctx, dev, 0)?;
    // SAFETY: an all-zero key is valid; the helper reads the size given.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = r.vni;
    // The helper takes the address in host order.
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(r.host);
    key.tunnel_ttl = TUNNEL_TTL;
    // SAFETY: helper calls on the program's skb with a key on the stack.
    let ret = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            0,
        )
    };
    if ret < 0 {
        return Err(DropReason::RewriteFailed);
    }
    Ok(unsafe { bpf_redirect(dev, 0) } as i32)
}

/// An ARP request from a container for a container of its overlay network on another host:
/// answered on the spot (the remote's Docker-style MAC) and sent back out of the veth it came
/// in by. None for every other ARP frame, which goes its ordinary way.
#[inline(always)]
pub fn answer_arp(p: &mut Tc, ifindex: u32) -> Option<i32> {
    let arp: ArpHdr = p.load(ETH_LEN)?;
    if u16::from_be_bytes(arp.oper) != ARP_REQUEST {
        return None;
    }
    let ep = maps::endpoint(u32::from_ne_bytes(arp.spa))?;
    peer(u32::from_ne_bytes(arp.tpa), ep.network)?;
    let mac = container_mac(u32::from_ne_bytes(arp.tpa));
    let ctx = p.0;
    ctx.store(0, &arp.sha, 0).ok()?;
    ctx.store(6, &mac, 0).ok()?;
    ctx.store(ARP_OPER, &ARP_REPLY.to_be_bytes(), 0).ok()?;
    ctx.store(ARP_SHA, &mac, 0).ok()?;
    ctx.store(ARP_SPA, &arp.tpa, 0).ok()?;
    ctx.store(ARP_THA, &arp.sha, 0).ok()?;
    ctx.store(ARP_TPA, &arp.spa, 0).ok()?;
    // SAFETY: helper call with plain values.
    Some(unsafe { bpf_redirect(ifindex, 0) } as i32)
}

/// Out of the tunnel: the VNI must be a local overlay network, the sender that network's
/// container on the host the packet came from, the destination a local container of the same
/// network. Then straight into the container's namespace.
#[inline(always)]
pub fn decap(ctx: &TcContext, p: &mut Tc, h: &Hdr) -> Result<i32, DropReason> {
    let (vni, from) = tunnel_key(ctx)?;
    let bridge = bridge(vni)?;
    let sender = remote(h.saddr).ok_or(DropReason::Tunnel)?;
    if sender.vni != vni || sender.host != from {
        return Err(DropReason::Tunnel);
    }
    deliver(p, h, bridge, false)
}

/// The tunnel key of a frame out of the VXLAN device: its VNI and the underlay address
/// (network order) of the host that sent it.
#[inline(always)]
pub fn tunnel_key(ctx: &TcContext) -> Result<(u32, u32), DropReason> {
    // SAFETY: an all-zero key is valid; the helper fills the size given.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    let ret = unsafe {
        bpf_skb_get_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            0,
        )
    };
    if ret < 0 {
        return Err(DropReason::Tunnel);
    }
    // SAFETY: the ipv4 arm is the one the helper filled (no BPF_F_TUNINFO_IPV6).
    let from = unsafe { key.__bindgen_anon_1.remote_ipv4 };
    Ok((key.tunnel_id, from.to_be()))
}

/// The local bridge of the overlay network with `vni`.
#[inline(always)]
pub fn bridge(vni: u32) -> Result<u32, DropReason> {
    // SAFETY: read-only lookup of a map the controller fills.
    unsafe { OVERLAY_BRIDGES.get(vni) }
        .copied()
        .ok_or(DropReason::Tunnel)
}

/// Out of the WireGuard device: the kernel (or the daemon) decrypted it and checked that its
/// inner source is one of the sending peer's containers. It must be a container of an
/// encrypted network, sent to a local container of the same network.
#[inline(always)]
pub fn decrypted(p: &mut Tc, h: &Hdr) -> Result<i32, DropReason> {
    let sender = remote(h.saddr).ok_or(DropReason::Tunnel)?;
    deliver(p, h, bridge(sender.vni)?, true)
}

/// Hands a frame from another host to its local container on the overlay `bridge`; an
/// encrypted network takes only what came `encrypted`, the others only what did not.
#[inline(always)]
fn deliver(p: &mut Tc, h: &Hdr, bridge: u32, encrypted: bool) -> Result<i32, DropReason> {
    let ep = maps::endpoint(h.daddr).ok_or(DropReason::Tunnel)?;
    receiving(ep.network, bridge, encrypted)?;
    p.set_macs(&ep.mac, &container_mac(h.saddr))
        .ok_or(DropReason::RewriteFailed)?;
    Ok(crate::redirect::into_container(ep.ifindex))
}

/// Whether the local container on network `network` may take a frame from another host for
/// overlay `bridge`, that came `encrypted` or not: the same network, encrypted exactly when
/// the network is, ICC on.
#[inline(always)]
pub fn receiving(network: u32, bridge: u32, encrypted: bool) -> Result<(), DropReason> {
    if network != bridge {
        return Err(DropReason::Tunnel);
    }
    let net = maps::network(bridge).ok_or(DropReason::Tunnel)?;
    match (net.flags & NET_ENCRYPTED != 0, encrypted) {
        (true, false) => return Err(DropReason::Unencrypted),
        (false, true) => return Err(DropReason::Tunnel),
        _ => {}
    }
    if net.flags & NET_ICC == 0 {
        return Err(DropReason::IccOff);
    }
    Ok(())
}

/// The WireGuard device hands over bare IP packets: an Ethernet header in front (addresses
/// filled in on delivery) lets the one parser and the veth take them.
#[inline(always)]
pub fn add_ethernet(ctx: &TcContext) -> bool {
    // SAFETY: helper call on the program's skb.
    if unsafe { bpf_skb_change_head(ctx.skb.skb, ETH_LEN as u32, 0) } != 0 {
        return false;
    }
    // The EtherType the device gave the packet (IPv4 or IPv6), in network byte order.
    // SAFETY: the context's skb pointer is valid for the whole run.
    let proto = unsafe { (*ctx.skb.skb).protocol } as u16;
    ctx.store(12, &proto, 0).is_ok()
}
