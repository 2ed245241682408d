//! netctl's packet path. Each entry program is parse → decide → act and leaves through one
//! place that counts the verdict (and every drop, by reason).
//!
//! - `uplink_xdp`: XDP on each uplink. Where checksums are complete (native XDP on a NIC) it
//!   does the uplink's ingress work for TCP, UDP and ICMP echo before the kernel allocates an
//!   skb, and marks the packet so TC does not repeat it; everything else goes to TC unmarked.
//! - `uplink_ingress`: TC ingress on each uplink. The ingress work for every packet XDP did
//!   not mark, then the fast path straight into the container (`bpf_redirect_peer`).
//! - `uplink_egress`: TC egress on each uplink. Published-port replies get the host address
//!   back; container traffic is masqueraded; forwarded traffic nobody owns is dropped.
//! - `from_container`: TC ingress on each container's host-side veth. Isolation, ICC,
//!   internal networks, hairpin; IPv6 of dual-stack networks by the same rules (`ipv6.rs`).
//! - `tunnel_ingress`: TC ingress on the overlay's VXLAN device. What comes out of the
//!   tunnel, checked and handed to the container (`overlay.rs`).
//! - `wg_ingress`: TC ingress on the WireGuard device of encrypted overlays: what it
//!   decrypted, checked and handed to the container (`overlay.rs`).
//! - `kernel_drop` (in `kernel_drops.rs`): the kernel's own drops of container packets, for
//!   `netctl trace --drops` while it runs.
//! - `sock_*` (in `sock.rs`, their own entry file): cgroup socket programs for host-local
//!   clients of published ports and the containers' 127.0.0.11.

// Built for bpfel-unknown-none by netctl's build script. On the host (clippy, `cargo test
// --workspace`) it is an ordinary binary that does nothing, so workspace-wide tools work.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Atomic OR on conntrack flags (see ct::set_flags); the eBPF build uses nightly anyway.
#![cfg_attr(
    target_arch = "bpf",
    feature(core_intrinsics),
    allow(internal_features)
)]

mod clock;
mod ct;
mod events;
mod features;
mod host;
mod ipv6;
mod kernel_drops;
mod maps;
mod nat;
mod nat6;
mod nat64;
mod nat64_icmp;
mod overlay;
mod overlay6;
mod packet;
mod parse;
mod policy;
mod redirect;
mod room;
mod sock;
mod stats;
mod step;
mod tail;
mod uplink;
mod verdict;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_OK, TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use netctl_common::{
    ct::CtKey,
    drop::DropReason,
    event::{VERDICT_DROP, VERDICT_PASS, VERDICT_REDIRECT},
    maps::{CONFIG_FAST_PATH, NET_INTERNAL, UPLINK_XDP_NAT},
    stats::Hook,
    XDP_DONE_MARK,
};
use network_types::eth::EtherType;
use packet::{Packet, Tc, Xdp};
use parse::{parse, Hdr, Icmp, NotParsed};
use policy::Dest;

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
            events::drop(p, hook, ifindex, reason as u8, before);
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

// Each program that tracks flows comes twice: `MODERN` (bpf_loop, atomic flag updates) and
// its `_compat` twin for kernels before 5.17, whose verifiers refuse those instructions even
// in dead code. The controller loads one of the two under the usual name.

#[xdp]
pub fn uplink_xdp(ctx: XdpContext) -> u32 {
    xdp_ingress::<true>(ctx)
}

#[xdp]
pub fn uplink_xdp_compat(ctx: XdpContext) -> u32 {
    xdp_ingress::<false>(ctx)
}

#[inline(always)]
fn xdp_ingress<const MODERN: bool>(ctx: XdpContext) -> u32 {
    let hook = Hook::UplinkXdp;
    let mut p = Xdp(&ctx);
    verdict::count(hook, p.len());
    let ifindex = ctx.ingress_ifindex() as u32;
    // Where a packet may carry a partial checksum XDP cannot see, TC does everything.
    if maps::uplink(ifindex).is_none_or(|u| u.flags & UPLINK_XDP_NAT == 0) {
        return xdp_action::XDP_PASS;
    }
    // Room for the mark first: without it TC could not tell that XDP did the work.
    if !p.reserve_mark() {
        return xdp_action::XDP_PASS;
    }
    let mut h = match parse(&p, ifindex) {
        Ok(h) if h.xdp_handles() => h,
        Ok(_) | Err(NotParsed::Other(_)) => return xdp_action::XDP_PASS,
        Err(NotParsed::Malformed) => {
            finish(
                &p,
                hook,
                ifindex,
                None,
                None,
                Verdict::Drop(DropReason::Malformed),
            );
            return xdp_action::XDP_DROP;
        }
    };
    let before = h.key();
    let r = uplink::ingress::<MODERN, Xdp>(&mut p, &mut h, ifindex);
    if matches!(r, Ok(true)) {
        return xdp_action::XDP_PASS; // a NAT64 reply: TC makes it IPv6
    }
    let v = Verdict::of(r.map(|_| None));
    match finish(&p, hook, ifindex, Some(&before), Some(&h.key()), v) {
        Verdict::Drop(_) => xdp_action::XDP_DROP,
        _ => {
            p.write_mark(XDP_DONE_MARK);
            xdp_action::XDP_PASS
        }
    }
}

/// Runs a TC program body between parsing and the funnel. Frames that are not IPv4 go to
/// `other` (with their EtherType).
#[inline(always)]
fn tc_run(
    ctx: &TcContext,
    hook: Hook,
    other: impl FnOnce(&mut Tc, u16, u32) -> Result<Option<i32>, DropReason>,
    body: impl FnOnce(&mut Tc, &mut Hdr, u32) -> Result<Option<i32>, DropReason>,
) -> i32 {
    let mut p = Tc(ctx);
    verdict::count(hook, ctx.len());
    let ifindex = tc_ifindex(ctx);
    let mut h = match parse(&p, ifindex) {
        Ok(h) => h,
        Err(NotParsed::Other(ethertype)) => {
            let v = Verdict::of(other(&mut p, ethertype, ifindex));
            return tc_code(finish(&p, hook, ifindex, None, None, v));
        }
        Err(NotParsed::Malformed) => {
            return tc_code(finish(
                &p,
                hook,
                ifindex,
                None,
                None,
                Verdict::Drop(DropReason::Malformed),
            ))
        }
    };
    let before = h.key();
    let v = Verdict::of(body(&mut p, &mut h, ifindex));
    if h.first_frag && !matches!(v, Verdict::Drop(_)) {
        parse::remember_first_fragment(&before, h.ip_id, ifindex);
    }
    tc_code(finish(&p, hook, ifindex, Some(&before), Some(&h.key()), v))
}

/// Uplinks pass what is not IPv4 (ARP, IPv6 of the host itself).
fn pass_other(_: &mut Tc, _: u16, _: u32) -> Result<Option<i32>, DropReason> {
    Ok(None)
}

#[classifier]
pub fn uplink_ingress(ctx: TcContext) -> i32 {
    ingress::<true>(ctx)
}

#[classifier]
pub fn uplink_ingress_compat(ctx: TcContext) -> i32 {
    ingress::<false>(ctx)
}

#[inline(always)]
fn ingress<const MODERN: bool>(ctx: TcContext) -> i32 {
    // IPv6: what concerns containers (nat6.rs); the host's own and ARP pass.
    let other = |_: &mut Tc, ethertype, _| {
        if ethertype == EtherType::Ipv6 as u16 {
            return tail::call(&ctx, tail::UPLINK_INGRESS6);
        }
        Ok(None)
    };
    tc_run(&ctx, Hook::UplinkIngress, other, |p, h, ifindex| {
        if !packet::xdp_done(&ctx, ifindex) && uplink::ingress::<MODERN, Tc>(p, h, ifindex)? {
            return tail::call(&ctx, tail::UPLINK_INGRESS64);
        }
        stats::received(h.daddr, p.len());
        if maps::config().flags & CONFIG_FAST_PATH != 0 {
            return Ok(redirect::to_container_peer(p, h));
        }
        Ok(None)
    })
}

#[classifier]
pub fn uplink_egress(ctx: TcContext) -> i32 {
    egress::<true>(ctx)
}

#[classifier]
pub fn uplink_egress_compat(ctx: TcContext) -> i32 {
    egress::<false>(ctx)
}

#[inline(always)]
fn egress<const MODERN: bool>(ctx: TcContext) -> i32 {
    tc_run(&ctx, Hook::UplinkEgress, pass_other, |p, h, ifindex| {
        uplink::egress::<MODERN, Tc>(&ctx, p, h, ifindex)?;
        Ok(None)
    })
}

#[classifier]
pub fn from_container(ctx: TcContext) -> i32 {
    container::<true>(ctx)
}

#[classifier]
pub fn from_container_compat(ctx: TcContext) -> i32 {
    container::<false>(ctx)
}

#[inline(always)]
fn container<const MODERN: bool>(ctx: TcContext) -> i32 {
    let other = |p: &mut Tc, ethertype, ifindex| {
        if ethertype == EtherType::Ipv6 as u16 {
            return tail::call(&ctx, tail::FROM_CONTAINER6);
        }
        policy::non_ipv4(p, ethertype, ifindex)?;
        Ok(overlay::answer_arp(p, ifindex))
    };
    let code = tc_run(&ctx, Hook::FromContainer, other, |p, h, ifindex| {
        let (ep, net, dst_mac) = policy::sender(p, h, ifindex)?;
        let sender = h.saddr;
        let r = (|| {
            let dest = policy::check(h, &ep, &net, &dst_mac)?;
            if let Dest::SameNetwork = dest {
                if let Some(r) = overlay::peer(h.daddr, ep.network) {
                    return overlay::send(&ctx, &r, &net).map(Some);
                }
            }
            if h.icmp == Icmp::Error {
                // Errors about hairpin flows go back the way the flow came.
                if nat::icmp_error(p, h, true)? {
                    return redirect::to_container(p, h).map(Some);
                }
                return Ok(None);
            }
            match dest {
                // Internal networks reach their gateway, never a published port (no hairpin).
                Dest::Host if net.flags & NET_INTERNAL != 0 => {
                    return match nat::is_published(h) {
                        true => Err(DropReason::Internal),
                        false => Ok(None),
                    };
                }
                Dest::Host if h.natable() => {
                    return match nat::hairpin::<MODERN, Tc>(p, h)? {
                        Some(_) => redirect::to_container(p, h).map(Some),
                        None => Ok(None),
                    };
                }
                Dest::Outside
                    if nat::is_published_reply(h)
                        && maps::config().flags & CONFIG_FAST_PATH != 0
                        && !maps::shaped(ifindex) =>
                {
                    return Ok(redirect::to_uplink(p, h, ifindex));
                }
                _ => {}
            }
            Ok(None)
        })();
        stats::sent(sender, p.len(), r.is_err());
        r
    });
    // What passes goes on to whatever else filters the veth (TCX_NEXT): the ingress qdisc of
    // a chained CNI bandwidth plugin, which sends the container's traffic through its shaper.
    match code {
        TC_ACT_OK => TC_ACT_UNSPEC,
        c => c,
    }
}

/// IPv6 of `from_container` and `uplink_ingress`, in programs of their own (entered by tail
/// call, `tail.rs`): an IPv6 flow entry is too large for both families' work to share one
/// BPF stack. What they pass goes on as the caller's would.
#[classifier]
pub fn from_container6(ctx: TcContext) -> i32 {
    container6::<true>(ctx)
}

#[classifier]
pub fn from_container6_compat(ctx: TcContext) -> i32 {
    container6::<false>(ctx)
}

#[inline(always)]
fn container6<const MODERN: bool>(ctx: TcContext) -> i32 {
    let mut p = Tc(&ctx);
    let ifindex = tc_ifindex(&ctx);
    let r = room::sender().and_then(|sender| {
        match step::back(ipv6::from_container(&mut p, ifindex, sender))? {
            ipv6::BEYOND => match step::back(nat6::egress::<MODERN>(&mut p, &sender.0, &sender.1))?
            {
                nat6::TO_NAT64 if MODERN => {
                    step::code(nat64::egress::<MODERN>(&mut p, sender.0.network)).map(Some)
                }
                code => Ok(Some(code as i32)),
            },
            ipv6::TO_HOST => match step::back(nat6::hairpin::<MODERN>(&mut p))? {
                step::PASS => Ok(None),
                code => Ok(Some(code as i32)),
            },
            ipv6::REMOTE => {
                step::code(overlay6::send(&ctx, &p, &sender.1, sender.0.network)).map(Some)
            }
            ipv6::ANSWER_NS => step::code(overlay6::answer_ns(&mut p, sender.0.network)).map(Some),
            _ => Ok(None),
        }
    });
    stats::sent6(ifindex, p.len(), r.is_err());
    let v = Verdict::of(r);
    match tc_code(finish(&p, Hook::FromContainer, ifindex, None, None, v)) {
        TC_ACT_OK => TC_ACT_UNSPEC,
        c => c,
    }
}

#[classifier]
pub fn uplink_ingress6(ctx: TcContext) -> i32 {
    ingress6::<true>(ctx)
}

#[classifier]
pub fn uplink_ingress6_compat(ctx: TcContext) -> i32 {
    ingress6::<false>(ctx)
}

#[inline(always)]
fn ingress6<const MODERN: bool>(ctx: TcContext) -> i32 {
    let mut p = Tc(&ctx);
    let ifindex = tc_ifindex(&ctx);
    let r = match step::back(nat6::ingress::<MODERN>(&mut p, ifindex)) {
        Ok(i64::MAX) => Ok(None),
        r => r.map(|code| Some(code as i32)),
    };
    let v = Verdict::of(r);
    tc_code(finish(&p, Hook::UplinkIngress, ifindex, None, None, v))
}

/// NAT64's replies (`nat64.rs`), entered by tail call from `uplink_ingress`.
#[classifier]
pub fn uplink_ingress64(ctx: TcContext) -> i32 {
    ingress64::<true>(ctx)
}

#[classifier]
pub fn uplink_ingress64_compat(ctx: TcContext) -> i32 {
    ingress64::<false>(ctx)
}

#[inline(always)]
fn ingress64<const MODERN: bool>(ctx: TcContext) -> i32 {
    if !MODERN {
        return TC_ACT_SHOT; // never entered: the `_compat` programs have no NAT64
    }
    let mut p = Tc(&ctx);
    let ifindex = tc_ifindex(&ctx);
    let r = match parse(&p, ifindex) {
        Ok(h) if h.icmp == Icmp::Error => match step::back(nat64_icmp::error(&mut p, &h)) {
            Ok(step::PASS) => Ok(None),
            r => r.map(|code| Some(code as i32)),
        },
        Ok(h) => step::back(nat64::ingress::<MODERN>(&p, &h))
            .and_then(|_| step::code(nat64::deliver(&mut p, &h)).map(Some)),
        Err(_) => Err(DropReason::Malformed),
    };
    let v = Verdict::of(r);
    tc_code(finish(&p, Hook::UplinkIngress, ifindex, None, None, v))
}

#[classifier]
pub fn to_container(ctx: TcContext) -> i32 {
    // IPv6 is checked as IPv4 is; what else the bridge hands them (ARP) goes by untouched.
    let other = |p: &mut Tc, ethertype, _| {
        if ethertype == EtherType::Ipv6 as u16 {
            // SAFETY: the context's skb pointer is valid for the whole run.
            let ingress = unsafe { (*ctx.skb.skb).ingress_ifindex };
            return ipv6::to_container(p, ingress).map(|_| None);
        }
        Ok(None)
    };
    tc_run(&ctx, Hook::ToContainer, other, |p, h, _| {
        policy::receiver(p, h)?;
        Ok(None)
    })
}

#[classifier]
pub fn tunnel_ingress(ctx: TcContext) -> i32 {
    // IP of either family crosses, never ARP or neighbour discovery: both are answered on
    // each side.
    let other = |p: &mut Tc, ethertype, _| {
        if ethertype == EtherType::Ipv6 as u16 {
            return overlay6::decap(&ctx, p).map(Some);
        }
        Err(DropReason::NotIpv4)
    };
    tc_run(&ctx, Hook::Tunnel, other, |p, h, _| {
        let v = overlay::decap(&ctx, p, h)?;
        stats::received(h.daddr, p.len());
        Ok(Some(v))
    })
}

#[classifier]
pub fn wg_ingress(ctx: TcContext) -> i32 {
    if !overlay::add_ethernet(&ctx) {
        verdict::dropped(Hook::Tunnel, DropReason::Malformed);
        return TC_ACT_SHOT;
    }
    let other = |_: &mut Tc, _, _| Err(DropReason::NotIpv4);
    tc_run(&ctx, Hook::Tunnel, other, |p, h, _| {
        let v = overlay::decrypted(p, h)?;
        stats::received(h.daddr, p.len());
        Ok(Some(v))
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
