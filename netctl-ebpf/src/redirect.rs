//! Handing packets straight to a container's interface, skipping the bridge and the host
//! stack: the fast path for published ports and the only path for hairpin.

use aya_ebpf::helpers::{bpf_redirect, bpf_redirect_peer};

use crate::{maps, packet::Packet};

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
