//! Handing packets straight to a container's interface, skipping the bridge and the host
//! stack: the fast path for published ports and the only path for hairpin.

use aya_ebpf::{
    bindings::BPF_FIB_LKUP_RET_SUCCESS,
    helpers::{bpf_redirect, bpf_redirect_peer},
};

use netctl_common::drop::DropReason;

use crate::{
    host, maps,
    packet::{Packet, Tc},
    parse::{Hdr, IP_CSUM, IP_TTL},
};

/// Docker-style MAC of a container address: 02:42 and the four address bytes.
#[inline(always)]
pub fn container_mac(addr: u32) -> [u8; 6] {
    let a = addr.to_ne_bytes();
    [0x02, 0x42, a[0], a[1], a[2], a[3]]
}

/// Rewrites the Ethernet header for the container owning `addr`; returns its host veth.
#[inline(always)]
fn prepare<P: Packet>(p: &mut P, addr: u32) -> Option<u32> {
    let ep = maps::endpoint(addr)?;
    let net = maps::network(ep.network)?;
    p.set_macs(&ep.mac, &net.mac)?;
    Some(ep.ifindex)
}

/// Decrements the TTL as a router does (the datapath routes what it redirects). False, and
/// nothing changed, when the TTL is about to run out.
#[inline(always)]
pub fn dec_ttl<P: Packet>(p: &mut P, l3: usize) -> Option<bool> {
    // TTL and protocol share a 16-bit word of the header checksum.
    let word: u16 = p.load(l3 + IP_TTL)?;
    let mut bytes = word.to_ne_bytes();
    if bytes[0] <= 1 {
        return Some(false);
    }
    bytes[0] -= 1;
    let new = u16::from_ne_bytes(bytes);
    p.csum16(l3 + IP_CSUM, word, new)?;
    p.store16(l3 + IP_TTL, new)?;
    Some(true)
}

/// From a host device's TC ingress: into the container's namespace directly
/// (`bpf_redirect_peer`, see [`into_container`]), as if it arrived on its eth0. None if the destination is no
/// container, or its TTL runs out here (the host then routes it and says so).
#[inline(always)]
pub fn to_container_peer<P: Packet>(p: &mut P, h: &Hdr) -> Option<i32> {
    maps::endpoint(h.daddr)?;
    if !dec_ttl(p, h.l3)? {
        return None;
    }
    let ifindex = prepare(p, h.daddr)?;
    Some(into_container(ifindex))
}

/// Into the container behind host-side veth `ifindex`: straight into its namespace, or, when
/// qdiscs on the veth shape its traffic, out of the veth through them.
#[inline(always)]
pub fn into_container(ifindex: u32) -> i32 {
    // SAFETY: helper calls with plain values.
    let r = unsafe {
        match maps::shaped(ifindex) {
            true => bpf_redirect(ifindex, 0),
            false => bpf_redirect_peer(ifindex, 0),
        }
    };
    r as i32
}

/// Out of the container's host-side veth (egress), so the container receives it: hairpin,
/// which the host cannot route (its source is a host address).
#[inline(always)]
pub fn to_container<P: Packet>(p: &mut P, h: &Hdr) -> Result<i32, DropReason> {
    if !dec_ttl(p, h.l3).ok_or(DropReason::RewriteFailed)? {
        return Err(DropReason::TtlExceeded);
    }
    let ifindex = prepare(p, h.daddr).ok_or(DropReason::CtMiss)?;
    // SAFETY: helper call with plain values.
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}

/// From a container's veth: a reply of a published-port flow goes straight out of the uplink
/// the route points at (the uplink's TC egress still translates it), skipping the bridge and
/// the host's IP stack. Does the routing work itself: FIB lookup, TTL, Ethernet addresses.
/// None when the route does not leave through an uplink or the kernel should handle it (TTL
/// about to expire, no neighbour entry yet): the packet then takes the ordinary path.
#[inline(always)]
pub fn to_uplink(p: &mut Tc, h: &Hdr, ifindex: u32) -> Option<i32> {
    let (ret, fib) = host::route(p, h, ifindex, 0);
    if ret != BPF_FIB_LKUP_RET_SUCCESS as i64 || maps::uplink(fib.ifindex).is_none() {
        return None;
    }
    if !dec_ttl(p, h.l3)? {
        return None;
    }
    p.set_macs(&fib.dmac, &fib.smac)?;
    // SAFETY: helper call with plain values.
    Some(unsafe { bpf_redirect(fib.ifindex, 0) } as i32)
}
