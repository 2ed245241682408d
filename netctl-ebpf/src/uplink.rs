//! What the uplink programs decide, in XDP or TC alike: translate, then keep the host closed —
//! nothing reaches a container outside a tracked flow ("no way in"), a NAT port whose flow
//! is gone is not answered by the host, and the host forwards nothing that is no container's
//! (unless it was a router before netctl came).

use aya_ebpf::programs::TcContext;
use netctl_common::{drop::DropReason, maps::CONFIG_FORWARD_OPEN, proto};

use crate::{
    host,
    maps::{self, config},
    nat, nat64,
    packet::Packet,
    parse::{Hdr, Icmp},
};

/// Ingress: everything arriving from outside. True: the reply of a NAT64 flow, which
/// `uplink_ingress64` translates (XDP leaves it to TC).
#[inline(always)]
pub fn ingress<const MODERN: bool, P: Packet>(
    p: &mut P,
    h: &mut Hdr,
    ifindex: u32,
) -> Result<bool, DropReason> {
    // From outside with the address of one of our containers or of the host itself: forged
    // (rp_filter would be all that stood there).
    if maps::endpoint(h.saddr).is_some() || maps::is_host_addr(h.saddr) {
        return Err(DropReason::Spoofed);
    }
    let in_flow = if h.icmp == Icmp::Error {
        nat::icmp_error(p, h, false)?
    } else {
        nat::ingress::<MODERN, P>(p, h)?
    };
    if in_flow {
        return Ok(false);
    }
    if maps::endpoint(h.daddr).is_some() {
        return Err(DropReason::NoWayIn);
    }
    if maps::is_host_addr(h.daddr) {
        // NAT64's replies, and the ICMP errors that may be about its flows (sorted out there).
        if MODERN && (nat64::owns_reply(h) || h.icmp == Icmp::Error) {
            return Ok(true);
        }
        if lost_nat_reply(p, h) {
            return Err(DropReason::CtMiss);
        }
        return Ok(false);
    }
    if config().flags & CONFIG_FORWARD_OPEN == 0 && host::forwards(p, h, ifindex) {
        return Err(DropReason::ForwardDenied);
    }
    Ok(false)
}

/// A packet for a NAT source port that no flow and no host socket owns: the reply of a
/// masqueraded connection whose flow was lost. Dropped rather than answered with a RST (or a
/// port unreachable) that would kill the connection: the container's next packet rebuilds
/// the flow from the half that survived. A TCP SYN is someone else's new connection attempt
/// and left to the host.
#[inline(always)]
fn lost_nat_reply<P: Packet>(p: &P, h: &Hdr) -> bool {
    if h.proto != proto::UDP && (h.proto != proto::TCP || h.is_syn()) || h.frag {
        return false;
    }
    let cfg = config();
    let port = u16::from_be(h.dport);
    (cfg.nat_port_min..=cfg.nat_port_max).contains(&port) && !host::socket_owns(p, h)
}

/// Egress: everything leaving through the uplink.
#[inline(always)]
pub fn egress<const MODERN: bool, P: Packet>(
    ctx: &TcContext,
    p: &mut P,
    h: &mut Hdr,
    ifindex: u32,
) -> Result<(), DropReason> {
    let ours = if h.icmp == Icmp::Error {
        nat::icmp_error(p, h, false)? || maps::endpoint(h.saddr).is_some()
    } else {
        nat::egress::<MODERN, P>(p, h, ifindex)?
    };
    // Forwarded (it came in on some interface) but no container's and no flow's. A host
    // source address is the host's own (the overlay's tunnel packets keep the interface their
    // inner frame came in by).
    if !ours
        && forwarded(ctx)
        && !maps::is_host_addr(h.saddr)
        && config().flags & CONFIG_FORWARD_OPEN == 0
    {
        return Err(DropReason::ForwardDenied);
    }
    Ok(())
}

/// The packet came in on an interface, rather than from a local socket.
#[inline(always)]
fn forwarded(ctx: &TcContext) -> bool {
    // SAFETY: the context's skb pointer is valid for the whole run.
    unsafe { (*ctx.skb.skb).ingress_ifindex != 0 }
}
