//! netctl's packet path. Each entry program is parse → decide → act and leaves through one
//! place that counts the verdict (and every drop, by reason).
//!
//! - `uplink_xdp`: XDP on each uplink. Published-port DNAT and masquerade replies for TCP, UDP
//!   and ICMP echo, and the "no way in" rule, before the kernel allocates an skb.
//! - `uplink_ingress`: TC ingress on each uplink. The same when XDP is off, ICMP errors always,
//!   then the fast path straight into the container (`bpf_redirect_peer`).
//! - `uplink_egress`: TC egress on each uplink. Published-port replies get the host address
//!   back; container traffic is masqueraded.
//! - `from_container`: TC ingress on each container's host-side veth. Isolation, ICC,
//!   internal networks, hairpin.

// Built for bpfel-unknown-none by netctl's build script. On the host (clippy, `cargo test
// --workspace`) it is an ordinary binary that does nothing, so workspace-wide tools work.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod ct;
mod maps;
mod nat;
mod packet;
mod parse;
mod policy;
mod redirect;
mod verdict;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use netctl_common::{
    drop::DropReason,
    maps::{CONFIG_FAST_PATH, UPLINK_XDP_ACTIVE},
    stats::Hook,
};
use packet::{Packet, Tc, Xdp};
use parse::{parse, Hdr, Icmp, NotParsed};
use policy::Dest;

/// Parses, or says what to do with what cannot be parsed.
#[inline(always)]
fn parsed<P: Packet>(p: &P) -> Result<Option<Hdr>, DropReason> {
    match parse(p) {
        Ok(h) => Ok(Some(h)),
        Err(NotParsed::Pass) => Ok(None),
        Err(NotParsed::Malformed) => Err(DropReason::Malformed),
    }
}

fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context's skb pointer is valid for the whole run.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// The drop funnel for TC programs.
#[inline(always)]
fn tc_verdict(hook: Hook, r: Result<i32, DropReason>) -> i32 {
    match r {
        Ok(v) => v,
        Err(reason) => {
            verdict::dropped(hook, reason);
            TC_ACT_SHOT
        }
    }
}

#[xdp]
pub fn uplink_xdp(ctx: XdpContext) -> u32 {
    let mut p = Xdp(&ctx);
    verdict::count(Hook::UplinkXdp, p.len());
    match xdp_ingress(&mut p) {
        Ok(()) => xdp_action::XDP_PASS,
        Err(reason) => {
            verdict::dropped(Hook::UplinkXdp, reason);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn xdp_ingress(p: &mut Xdp) -> Result<(), DropReason> {
    let Some(mut h) = parsed(p)? else {
        return Ok(());
    };
    // Only what XDP can translate; TC ingress takes the rest (and knows it, by UPLINKS flags).
    if !h.natable() {
        return Ok(());
    }
    nat::ingress(p, &mut h)?;
    nat::check_way_in(&h)
}

#[classifier]
pub fn uplink_ingress(ctx: TcContext) -> i32 {
    verdict::count(Hook::UplinkIngress, ctx.len());
    tc_verdict(Hook::UplinkIngress, tc_uplink_ingress(&ctx))
}

#[inline(always)]
fn tc_uplink_ingress(ctx: &TcContext) -> Result<i32, DropReason> {
    let mut p = Tc(ctx);
    let Some(mut h) = parsed(&p)? else {
        return Ok(TC_ACT_OK);
    };
    if h.icmp == Icmp::Error {
        nat::icmp_error(&mut p, &h)?;
        return Ok(TC_ACT_OK);
    }
    let xdp_done = h.xdp_handles()
        && maps::uplink(ifindex(ctx)).is_some_and(|u| u.flags & UPLINK_XDP_ACTIVE != 0);
    if !xdp_done {
        nat::ingress(&mut p, &mut h)?;
        nat::check_way_in(&h)?;
    }
    if maps::config().flags & CONFIG_FAST_PATH != 0 {
        if let Some(v) = redirect::to_container_peer(&mut p, h.daddr) {
            return Ok(v);
        }
    }
    Ok(TC_ACT_OK)
}

#[classifier]
pub fn uplink_egress(ctx: TcContext) -> i32 {
    verdict::count(Hook::UplinkEgress, ctx.len());
    tc_verdict(Hook::UplinkEgress, tc_uplink_egress(&ctx))
}

#[inline(always)]
fn tc_uplink_egress(ctx: &TcContext) -> Result<i32, DropReason> {
    let mut p = Tc(ctx);
    let Some(mut h) = parsed(&p)? else {
        return Ok(TC_ACT_OK);
    };
    if h.icmp == Icmp::Error {
        nat::icmp_error(&mut p, &h)?;
        return Ok(TC_ACT_OK);
    }
    nat::egress(&mut p, &mut h, ifindex(ctx))?;
    Ok(TC_ACT_OK)
}

#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    verdict::count(Hook::FromContainer, ctx.len());
    tc_verdict(Hook::FromContainer, tc_from_container(&ctx))
}

#[inline(always)]
fn tc_from_container(ctx: &TcContext) -> Result<i32, DropReason> {
    let mut p = Tc(ctx);
    let Some(mut h) = parsed(&p)? else {
        return Ok(TC_ACT_OK);
    };
    let (ep, net) = policy::sender(&h, ifindex(ctx))?;
    if let Dest::Host = policy::check(&h, &ep, &net)? {
        if h.natable() {
            if let Some(target) = nat::hairpin(&mut p, &mut h)? {
                return redirect::to_container(&mut p, target).ok_or(DropReason::CtMiss);
            }
        }
    }
    Ok(TC_ACT_OK)
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("netctl-ebpf holds netctl's kernel programs; netctl embeds them. Run netctl.");
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
