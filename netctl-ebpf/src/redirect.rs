//! Handing packets straight to a container's interface, skipping the bridge and the host
//! stack: the fast path for published ports and the only path for hairpin.

use aya_ebpf::{
    bindings::{bpf_fib_lookup, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::{bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};

use crate::{
    maps,
    packet::{Packet, Tc},
    parse::{Hdr, IP_CSUM},
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
    p.set_macs(&container_mac(addr), &net.mac)?;
    Some(ep.ifindex)
}

/// From a host device's TC ingress: into the container's namespace directly
/// (`bpf_redirect_peer`), as if it arrived on its eth0. None if `addr` is no container.
#[inline(always)]
pub fn to_container_peer<P: Packet>(p: &mut P, addr: u32) -> Option<i32> {
    let ifindex = prepare(p, addr)?;
    // SAFETY: helper call with plain values.
    Some(unsafe { bpf_redirect_peer(ifindex, 0) } as i32)
}

/// Out of the container's host-side veth (egress), so the container receives it.
#[inline(always)]
pub fn to_container<P: Packet>(p: &mut P, addr: u32) -> Option<i32> {
    let ifindex = prepare(p, addr)?;
    Some(unsafe { bpf_redirect(ifindex, 0) } as i32)
}

const AF_INET: u8 = 2;

/// From a container's veth: a reply of a published-port flow goes straight out of the uplink
/// the route points at (the uplink's TC egress still translates it), skipping the bridge and
/// the host's IP stack. Does the routing work itself: FIB lookup, TTL, Ethernet addresses.
/// None when the route does not leave through an uplink or the kernel should handle it (TTL
/// about to expire, no neighbour entry yet): the packet then takes the ordinary path.
#[inline(always)]
pub fn to_uplink(ctx: &TcContext, p: &mut Tc, h: &Hdr, ifindex: u32) -> Option<i32> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid request to fill in.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = h.proto;
    fib.sport = h.sport;
    fib.dport = h.dport;
    fib.ifindex = ifindex;
    fib.__bindgen_anon_3.ipv4_src = h.saddr;
    fib.__bindgen_anon_4.ipv4_dst = h.daddr;
    // SAFETY: helper call with a properly sized request.
    let ret = unsafe {
        fib_lookup(
            ctx.skb.skb.cast(),
            &mut fib,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    if ret != BPF_FIB_LKUP_RET_SUCCESS as i64 || maps::uplink(fib.ifindex).is_none() {
        return None;
    }
    // TTL and protocol share a 16-bit word of the header checksum.
    let word: u16 = p.load(h.l3 + 8)?;
    let ttl = word.to_ne_bytes()[0];
    if ttl <= 1 {
        return None;
    }
    let mut bytes = word.to_ne_bytes();
    bytes[0] = ttl - 1;
    let new = u16::from_ne_bytes(bytes);
    ctx.l3_csum_replace(h.l3 + IP_CSUM, word as u64, new as u64, 2)
        .ok()?;
    ctx.store(h.l3 + 8, &new, 0).ok()?;
    p.set_macs(&fib.dmac, &fib.smac)?;
    // SAFETY: helper call with plain values.
    Some(unsafe { bpf_redirect(fib.ifindex, 0) } as i32)
}
