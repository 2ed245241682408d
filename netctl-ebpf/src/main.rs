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
//! - `sock_*` (in `sock.rs`, their own entry file): cgroup socket programs for host-local
//!   clients of published ports and the containers' 127.0.0.11.

// Built for bpfel-unknown-none by netctl's build script. On the host (clippy, `cargo test
// --workspace`) it is an ordinary binary that does nothing, so workspace-wide tools work.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod ct;
mod events;
mod maps;
mod nat;
mod overlay;
mod packet;
mod parse;
mod policy;
mod redirect;
mod sock;
mod stats;
mod verdict;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use netctl_common::{
    ct::CtKey,
    drop::DropReason,
    event::{VERDICT_DROP, VERDICT_PASS, VERDICT_REDIRECT},
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

fn tc_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: the context's skb pointer is valid for the whole run.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// What a program decided for a packet.
enum Verdict {
    Pass,
    /// A redirect helper's return value.
    Redirect(i32),
    Drop(DropReason),
}

impl Verdict {
    fn of(r: Result<Option<i32>, DropReason>) -> Self {
        match r {
            Ok(None) => Verdict::Pass,
            Ok(Some(v)) => Verdict::Redirect(v),
            Err(reason) => Verdict::Drop(reason),
        }
    }
}

/// The one exit of every program: counts the drop by reason, reports it and the traced
/// packet (only when a tracer asked), and turns the verdict into the hook's return code.
#[inline(always)]
fn finish<P: Packet>(
    p: &P,
    hook: Hook,
    ifindex: u32,
    before: Option<&CtKey>,
    after: Option<&CtKey>,
    v: Verdict,
) -> Verdict {
    let code = match v {
        Verdict::Pass => VERDICT_PASS,
        Verdict::Redirect(_) => VERDICT_REDIRECT,
        Verdict::Drop(reason) => {
            verdict::dropped(hook, reason);
            events::drop(hook, ifindex, reason as u8, before, p.len());
            VERDICT_DROP
        }
    };
    events::packet(p, hook, ifindex, code, before, after);
    v
}

fn tc_code(v: Verdict) -> i32 {
    match v {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Redirect(r) => r,
        Verdict::Drop(_) => TC_ACT_SHOT,
    }
}

#[xdp]
pub fn uplink_xdp(ctx: XdpContext) -> u32 {
    let mut p = Xdp(&ctx);
    let hook = Hook::UplinkXdp;
    verdict::count(hook, p.len());
    let ifindex = ctx.ingress_ifindex() as u32;
    let mut h = match parsed(&p) {
        Ok(Some(h)) => h,
        Ok(None) => return xdp_action::XDP_PASS,
        Err(r) => {
            finish(&p, hook, ifindex, None, None, Verdict::Drop(r));
            return xdp_action::XDP_DROP;
        }
    };
    let before = h.key();
    let v = Verdict::of(xdp_ingress(&mut p, &mut h).map(|_| None));
    match finish(&p, hook, ifindex, Some(&before), Some(&h.key()), v) {
        Verdict::Drop(_) => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn xdp_ingress(p: &mut Xdp, h: &mut Hdr) -> Result<(), DropReason> {
    // Only what XDP can translate; TC ingress takes the rest (and knows it, by UPLINKS flags).
    if !h.xdp_handles() {
        return Ok(());
    }
    nat::ingress(p, h)?;
    nat::check_way_in(h)
}

/// Runs a TC program body between parsing and the funnel.
#[inline(always)]
fn tc_run(
    ctx: &TcContext,
    hook: Hook,
    body: impl FnOnce(&mut Tc, &mut Hdr, u32) -> Result<Option<i32>, DropReason>,
) -> i32 {
    let mut p = Tc(ctx);
    verdict::count(hook, ctx.len());
    let ifindex = tc_ifindex(ctx);
    let mut h = match parsed(&p) {
        Ok(Some(h)) => h,
        Ok(None) => return TC_ACT_OK,
        Err(r) => return tc_code(finish(&p, hook, ifindex, None, None, Verdict::Drop(r))),
    };
    let before = h.key();
    let v = Verdict::of(body(&mut p, &mut h, ifindex));
    tc_code(finish(&p, hook, ifindex, Some(&before), Some(&h.key()), v))
}

#[classifier]
pub fn uplink_ingress(ctx: TcContext) -> i32 {
    tc_run(&ctx, Hook::UplinkIngress, |p, h, ifindex| {
        if h.icmp == Icmp::Error {
            nat::icmp_error(p, h)?;
            return Ok(None);
        }
        let xdp_done = h.xdp_handles()
            && maps::uplink(ifindex).is_some_and(|u| u.flags & UPLINK_XDP_ACTIVE != 0);
        if !xdp_done {
            nat::ingress(p, h)?;
            nat::check_way_in(h)?;
        }
        stats::received(h.daddr, p.len());
        if maps::config().flags & CONFIG_FAST_PATH != 0 {
            return Ok(redirect::to_container_peer(p, h.daddr));
        }
        Ok(None)
    })
}

#[classifier]
pub fn uplink_egress(ctx: TcContext) -> i32 {
    tc_run(&ctx, Hook::UplinkEgress, |p, h, ifindex| {
        if h.icmp == Icmp::Error {
            nat::icmp_error(p, h)?;
        } else {
            nat::egress(p, h, ifindex)?;
        }
        Ok(None)
    })
}

#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    tc_run(&ctx, Hook::FromContainer, |p, h, ifindex| {
        let (ep, net) = policy::sender(h, ifindex)?;
        let sender = h.saddr;
        let r = (|| {
            match policy::check(h, &ep, &net)? {
                Dest::Host if h.natable() => {
                    if let Some(target) = nat::hairpin(p, h)? {
                        return redirect::to_container(p, target)
                            .map(Some)
                            .ok_or(DropReason::CtMiss);
                    }
                }
                Dest::Outside
                    if nat::is_published_reply(h)
                        && maps::config().flags & CONFIG_FAST_PATH != 0 =>
                {
                    return Ok(redirect::to_uplink(&ctx, p, h, ifindex));
                }
                _ => {}
            }
            Ok(None)
        })();
        stats::sent(sender, p.len(), r.is_err());
        r
    })
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
