//! IPv6 on dual-stack overlay networks: the IPv4 tunnel's rules (`overlay.rs`) for the
//! containers' IPv6 addresses. Their frames cross in the same VXLAN tunnel (the inner frame
//! is Ethernet, of either family); a neighbour solicitation for a remote container is
//! answered here as ARP is, so no neighbour discovery crosses and nothing is learned.

use aya_ebpf::{
    helpers::{bpf_redirect_peer, bpf_skb_change_tail},
    macros::map,
    maps::HashMap,
    programs::TcContext,
};
use netctl_common::{
    drop::DropReason,
    maps::{is_link_local, Ip6, NetInfo, NET_ENCRYPTED},
    overlay::{Remote6, OVERLAY_REMOTES_MAX},
    proto,
};

use crate::{
    maps, overlay,
    packet::{checksum_of, Packet, Tc},
    parse::{ETH_LEN, IPV6_LEN},
    step,
};

#[map(name = "OVERLAY_REMOTES6")]
pub static OVERLAY_REMOTES6: HashMap<Ip6, Remote6> =
    HashMap::with_max_entries(OVERLAY_REMOTES_MAX, 0);

const NEIGH_ADVERT: u8 = 136;
const OPT_TARGET_LL: u8 = 2;
/// Solicited and Override (RFC 4861 4.4), in the advertisement's first flags byte.
const NA_SOLICITED_OVERRIDE: u8 = 0x60;
/// An advertisement with one target link-layer address option.
const NA_LEN: usize = 32;

/// A container's IPv6 address on another host (any overlay network).
#[inline(always)]
pub fn remote(addr: &Ip6) -> Option<Remote6> {
    // SAFETY: read-only copy of a value the controller writes whole.
    unsafe { OVERLAY_REMOTES6.get(addr).copied() }
}

/// The container at IPv6 `addr` on another host, if it is on the overlay network whose
/// local bridge is `network`.
#[inline(always)]
pub fn peer(addr: &Ip6, network: u32) -> Option<Remote6> {
    let vni = overlay::vni(network)?;
    remote(addr).filter(|r| r.remote.vni == vni)
}

/// Toward the remote container a container's IPv6 packet is for (the sender's network
/// `net`, local bridge `network`): into the VXLAN tunnel. Encrypted overlays carry no IPv6
/// (refused when created): never into the clear.
#[inline(never)]
pub fn send(ctx: &TcContext, p: &Tc, net: &NetInfo, network: u32) -> i64 {
    step::run(|answer| {
        if net.flags & NET_ENCRYPTED != 0 {
            return Err(DropReason::Unencrypted);
        }
        let dst: Ip6 = p.load(ETH_LEN + 24).ok_or(DropReason::Malformed)?;
        let r = peer(&dst, network).ok_or(DropReason::Tunnel)?;
        step::done(answer, overlay::encap(ctx, &r.remote)?)
    })
}

/// The advertisement as its checksum covers it: the pseudo header, then the message.
#[repr(C)]
struct Advert {
    src: Ip6,
    dst: Ip6,
    len: u32,
    next: u32,
    kind: u8,
    code: u8,
    csum: u16,
    flags: [u8; 4],
    target: Ip6,
    opt: u8,
    opt_len: u8,
    mac: [u8; 6],
}

/// A container's neighbour solicitation for `target`, a container of its overlay network
/// (local bridge `network`) on another host: answered on the spot with the remote's MAC,
/// back into the soliciting container. Its source is known (`ipv6::from_container` checked
/// it is the container's own address and MAC); a duplicate address probe is never answered.
#[inline(never)]
pub fn answer_ns(p: &mut Tc, network: u32) -> i64 {
    step::run(|answer| {
        let src: Ip6 = p.load(ETH_LEN + 8).ok_or(DropReason::Malformed)?;
        let target: Ip6 = p
            .load(ETH_LEN + IPV6_LEN + 8)
            .ok_or(DropReason::Malformed)?;
        let asker: [u8; 6] = p.load(6).ok_or(DropReason::Malformed)?;
        let r = peer(&target, network).ok_or(DropReason::Tunnel)?;
        let ep = maps::endpoint6(&src).ok_or(DropReason::Spoofed)?;
        let mut a = Advert {
            src: target,
            dst: src,
            len: (NA_LEN as u32).to_be(),
            next: u32::from(proto::ICMPV6).to_be(),
            kind: NEIGH_ADVERT,
            code: 0,
            csum: 0,
            flags: [NA_SOLICITED_OVERRIDE, 0, 0, 0],
            target,
            opt: OPT_TARGET_LL,
            opt_len: 1,
            mac: r.mac,
        };
        a.csum = checksum_of(&mut a).ok_or(DropReason::RewriteFailed)?;
        let ctx = p.0;
        let len = (ETH_LEN + IPV6_LEN + NA_LEN) as u32;
        // SAFETY: helper call on the program's skb.
        if unsafe { bpf_skb_change_tail(ctx.skb.skb, len, 0) } != 0 {
            return Err(DropReason::RewriteFailed);
        }
        let ok = p.set_macs(&asker, &r.mac).is_some()
            && ctx.store(ETH_LEN + 4, &(NA_LEN as u16).to_be(), 0).is_ok()
            && ctx.store(ETH_LEN + 6, &[proto::ICMPV6, 255u8], 0).is_ok()
            && ctx.store(ETH_LEN + 8, &a.src, 0).is_ok()
            && ctx.store(ETH_LEN + 24, &a.dst, 0).is_ok()
            && ctx.store(ETH_LEN + IPV6_LEN, &[a.kind, a.code], 0).is_ok()
            && ctx.store(ETH_LEN + IPV6_LEN + 2, &a.csum, 0).is_ok()
            && ctx.store(ETH_LEN + IPV6_LEN + 4, &a.flags, 0).is_ok()
            && ctx.store(ETH_LEN + IPV6_LEN + 8, &a.target, 0).is_ok()
            && ctx
                .store(ETH_LEN + IPV6_LEN + 24, &[a.opt, a.opt_len], 0)
                .is_ok()
            && ctx.store(ETH_LEN + IPV6_LEN + 26, &a.mac, 0).is_ok();
        if !ok {
            return Err(DropReason::RewriteFailed);
        }
        // Straight back into the asker (no shaping for a neighbour advertisement).
        // SAFETY: helper call with plain values.
        step::done(answer, unsafe { bpf_redirect_peer(ep.ifindex, 0) })
    })
}

/// Out of the tunnel, an IPv6 frame: as IPv4's (`overlay::decap`) — the VNI a local
/// overlay network, the sender that network's container on the host the packet came from,
/// the destination a local container of the same network.
#[inline(always)]
pub fn decap(ctx: &TcContext, p: &mut Tc) -> Result<i32, DropReason> {
    let (vni, from) = overlay::tunnel_key(ctx)?;
    let bridge = overlay::bridge(vni)?;
    let src: Ip6 = p.load(ETH_LEN + 8).ok_or(DropReason::Malformed)?;
    let dst: Ip6 = p.load(ETH_LEN + 24).ok_or(DropReason::Malformed)?;
    let sender = remote(&src).ok_or(DropReason::Tunnel)?;
    if sender.remote.vni != vni || sender.remote.host != from {
        return Err(DropReason::Tunnel);
    }
    // A container's link-local address is its link's own: never reached from another host.
    if is_link_local(&dst) {
        return Err(DropReason::Tunnel);
    }
    let ep = maps::endpoint6(&dst).ok_or(DropReason::Tunnel)?;
    overlay::receiving(ep.network, bridge, false)?;
    p.set_macs(&ep.mac, &sender.mac)
        .ok_or(DropReason::RewriteFailed)?;
    crate::stats::received6(ep.ifindex, p.len());
    Ok(crate::redirect::into_container(ep.ifindex))
}
