//! NAT64 (RFC 6146's stateful translation, in the datapath): a container of an IPv6-only
//! network reaches an IPv4 server X at 64:ff9b::X (the well-known prefix of RFC 6052, which
//! the resolver's DNS64 answers with). Out, its IPv6 packet becomes an IPv4 one from the
//! uplink's address and a NAT port (RFC 7915's header translation); the replies come back
//! the other way, entered from `uplink_ingress` by tail call.
//!
//! Flows are tracked in `CT6` by the same conntrack as NAT66's: the original direction by
//! the container's tuple, the reply by the IPv4 tuple as IPv4-mapped addresses
//! (::ffff:a.b.c.d), so quotas, timeouts, the daemon's sweep and the tracer work as for any
//! flow. Their NAT ports are IPv4 masquerade's, and NAT64 never takes a tuple masquerade
//! holds (`ct::ipv4_tuple_held`).
//!
//! Only where `bpf_loop` is (Linux 5.17+, the `MODERN` programs): the controller sets
//! `NET_NAT64` there alone, and the `_compat` programs carry none of it.
//!
//! TCP, UDP and echo are translated; fragments, extension headers, IPv4 options and ICMP
//! errors are not (dropped). Packets leave with DF clear, so a smaller MTU on the IPv4 path
//! fragments them instead of needing an error that would not be translated.

use aya_ebpf::{
    bindings::{bpf_fib_lookup, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS},
    helpers::generated::{bpf_fib_lookup as fib_lookup, bpf_get_prandom_u32},
};
use netctl_common::{ct::*, drop::DropReason, maps::Ip6, proto};

use crate::{
    ct,
    ipv6::Hdr6,
    maps::{self, config, ENDPOINTS6},
    packet::{fold, L4Csum, Packet, Tc},
    parse::{Hdr, ETH_LEN, ETH_P_IPV6, ICMP_ECHO, IPV4_LEN, IPV6_LEN},
    redirect,
    room::scratch6 as scratch,
    step,
};

const ETH_P_IP: u16 = 0x0800;
const AF_INET: u8 = 2;
const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

#[inline(always)]
fn v4_of(a: &Ip6) -> u32 {
    u32::from_ne_bytes([a[12], a[13], a[14], a[15]])
}

#[inline(always)]
fn word(a: &Ip6, i: usize) -> u32 {
    u32::from_ne_bytes([a[i * 4], a[i * 4 + 1], a[i * 4 + 2], a[i * 4 + 3]])
}

/// The reply tuple of a NAT64 flow as `CT6` keys it, from the IPv4 packet that carries it.
#[inline(always)]
pub fn reply_key(h: &Hdr) -> CtKey6 {
    CtKey6 {
        saddr: ct::mapped(h.saddr),
        daddr: ct::mapped(h.daddr),
        sport: h.sport,
        dport: h.dport,
        proto: h.proto,
        _pad: [0; 3],
    }
}

/// An IPv4 packet to a host address that is the reply of a NAT64 flow (only asked once the
/// IPv4 tables had no flow for it).
#[inline(always)]
pub fn owns_reply(h: &Hdr) -> bool {
    if !h.natable() || h.frag {
        return false;
    }
    let cfg = config();
    let port = u16::from_be(h.dport);
    (cfg.nat_port_min..=cfg.nat_port_max).contains(&port) && ct::find(&reply_key(h)).is_some()
}

/// A container's IPv6 packet to 64:ff9b::/96, on a network with NAT64: tracked, made IPv4
/// and sent out of the uplink the host routes the IPv4 server to.
#[inline(never)]
pub fn egress<const MODERN: bool>(p: &mut Tc, bridge: u32) -> i64 {
    step::run(|answer| egress_step::<MODERN>(p, crate::nat6::packet()?, bridge, answer))
}

#[inline(always)]
fn egress_step<const MODERN: bool>(
    p: &mut Tc,
    h: &mut Hdr6,
    bridge: u32,
    answer: &mut i64,
) -> Result<(), DropReason> {
    if !h.natable() || h.is_echo() && h.icmp_type != ICMPV6_ECHO_REQUEST {
        return Err(match h.fragmented {
            true => DropReason::Fragment,
            false => DropReason::UnsupportedProtocol,
        });
    }
    // The IPv4 header takes the IPv6 one's place: nothing may sit between it and L4.
    if h.l4 != Some(ETH_LEN + IPV6_LEN) {
        return Err(DropReason::UnsupportedProtocol);
    }
    let s = scratch()?;
    let server = v4_of(&h.daddr);
    if crate::policy::to_tunnel_port(h.proto, h.dport, server) {
        return Err(DropReason::TunnelInjection);
    }
    let (known, up) = route4(p, h, server, bridge, &mut s.fib)?;
    let k = h.key();
    let syn = h.proto == proto::TCP && h.tcp_flags & 0x12 == 0x02;
    let tracked = match ct::lookup(&k, syn) {
        Some(f) => ct::track::<MODERN, _>(f, &k, h, &mut s.e)?,
        None => false,
    };
    if !tracked {
        if h.proto == proto::TCP && !syn {
            return Err(DropReason::CtMiss);
        }
        let v4proto = match h.proto {
            proto::TCP | proto::UDP => h.proto,
            _ => proto::ICMP,
        };
        s.probe.key = CtKey6 {
            saddr: ct::mapped(server),
            daddr: ct::mapped(up),
            sport: h.dport,
            dport: 0,
            proto: v4proto,
            _pad: [0; 3],
        };
        ct::init(&mut s.probe.reply, KIND_NAT64, CT_REPLY, k);
        s.probe.reply.rewrite = REWRITE_SRC | REWRITE_DST;
        s.probe.reply.src_addr = h.daddr;
        s.probe.reply.src_port = h.dport;
        s.probe.reply.dst_addr = h.saddr;
        s.probe.reply.dst_port = h.sport;
        let cfg = config();
        let port = ct::alloc_port::<MODERN, _>(&mut s.probe, cfg.nat_port_min, cfg.nat_port_max)?;
        if ct::ipv4_tuple_held(&s.probe.key) {
            ct::release(&s.probe.key);
            return Err(DropReason::CtConflict); // the retry draws another port
        }
        ct::open(&mut s.orig, KIND_NAT64, s.probe.key, h);
        s.orig.rewrite = REWRITE_SRC | REWRITE_DST;
        s.orig.src_addr = ct::mapped(up);
        s.orig.src_port = port;
        s.orig.dst_addr = s.probe.key.saddr;
        s.orig.dst_port = h.dport;
        ct::insert_orig(&k, &mut s.orig, &s.probe.key)?;
        s.e = s.orig;
    }
    step::back(to_ipv4(p, h, up, server, s.e.src_port))?;
    step::done(answer, crate::nat6::redirect_out(p, &s.fib, known)?)
}

/// Where the host routes IPv4 `server` for a packet arriving on `bridge`: an uplink, and
/// its address (what masquerade leaves with).
#[inline(always)]
fn route4(
    p: &Tc,
    h: &Hdr6,
    server: u32,
    bridge: u32,
    fib: &mut bpf_fib_lookup,
) -> Result<(bool, u32), DropReason> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid request to fill in.
    *fib = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = match h.proto {
        proto::TCP | proto::UDP => h.proto,
        _ => proto::ICMP,
    };
    fib.sport = h.sport;
    fib.dport = h.dport;
    fib.ifindex = bridge;
    fib.__bindgen_anon_4.ipv4_dst = server;
    // SAFETY: helper call with a properly sized request.
    let ret = unsafe {
        fib_lookup(
            p.ctx(),
            fib,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    let known = ret == BPF_FIB_LKUP_RET_SUCCESS as i64;
    if !known && ret != BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
        return Err(DropReason::Ipv6Unrouted);
    }
    let up = maps::uplink(fib.ifindex).ok_or(DropReason::Ipv6Unrouted)?;
    Ok((known, up.addr))
}

/// The L4 checksum field and the offsets of the source and destination "ports" (an echo's
/// identifier is both), as NAT66's; ICMP's checksum is changed plainly (ICMPv4's covers no
/// pseudo header, and the one ICMPv6's covers is taken out or put in word by word).
#[inline(always)]
fn l4_fields(proto_: u8, l4: usize) -> (L4Csum, usize, usize) {
    let (mut csum, sport, dport) = crate::nat6::l4_layout(proto_, l4);
    csum.pseudo = proto_ == proto::TCP || proto_ == proto::UDP;
    (csum, sport, dport)
}

/// `bpf_l4_csum_replace`'s flags for a 4-byte field of the pseudo header (TCP, UDP).
#[inline(always)]
fn pseudo_flags(c: L4Csum) -> u64 {
    let mut flags = 4u64 | u64::from(aya_ebpf::bindings::BPF_F_PSEUDO_HDR);
    if c.udp {
        flags |= u64::from(aya_ebpf::bindings::BPF_F_MARK_MANGLED_0);
    }
    flags
}

/// An echo message crossing families, rewritten while its packet still has the old family's
/// header (IPv6 when `to_v4`, else IPv4), its checksum at `csum`: ICMPv6's pseudo header (`src`, `dst`, the payload length,
/// next header 58) taken out of the checksum (`to_v4`) or put into it, and its type changed
/// (`types`: old, new).
#[inline(always)]
fn echo(
    p: &mut Tc,
    csum: usize,
    (src, dst, payload): (&Ip6, &Ip6, u16),
    to_v4: bool,
    types: (u8, u8),
) -> Option<()> {
    let mut pseudo = |w: u32| match to_v4 {
        true => p.csum32(csum, w, 0),
        false => p.csum32(csum, 0, w),
    };
    for i in 0..4 {
        pseudo(word(src, i))?;
        pseudo(word(dst, i))?;
    }
    pseudo(u32::from(payload).to_be())?;
    pseudo(u32::from(proto::ICMPV6).to_be())?;
    let (t_old, t_new) = (
        u16::from_be_bytes([types.0, 0]).to_be(),
        u16::from_be_bytes([types.1, 0]).to_be(),
    );
    p.csum16(csum, t_old, t_new)?;
    let l4 = ETH_LEN + if to_v4 { IPV6_LEN } else { IPV4_LEN };
    p.store16(l4, t_new)
}

/// A 20-byte IPv4 header with its checksum.
#[inline(always)]
fn ipv4_header(tos: u8, tot_len: u16, ttl: u8, proto_: u8, saddr: u32, daddr: u32) -> [u8; 20] {
    // SAFETY: no preconditions. A fresh identification for each packet (DF is clear).
    let id = unsafe { bpf_get_prandom_u32() } as u16;
    let (t, i, s, d) = (
        tot_len.to_be_bytes(),
        id.to_ne_bytes(),
        saddr.to_ne_bytes(),
        daddr.to_ne_bytes(),
    );
    let mut b = [
        0x45, tos, t[0], t[1], i[0], i[1], 0, 0, ttl, proto_, 0, 0, s[0], s[1], s[2], s[3], d[0],
        d[1], d[2], d[3],
    ];
    let mut sum = 0u32;
    for w in 0..10 {
        sum += u32::from(u16::from_be_bytes([b[w * 2], b[w * 2 + 1]]));
    }
    let c = fold(sum).to_be_bytes();
    b[10] = c[0];
    b[11] = c[1];
    b
}

/// Rewrites a container's IPv6 packet (TCP, UDP, echo request; no extension headers) as the
/// IPv4 packet `up`:`port` → `server`: the L4 checksum and ports first, where they are,
/// then the headers (RFC 7915: traffic class as TOS, hop limit less one as TTL).
#[inline(never)]
fn to_ipv4(p: &mut Tc, h: &Hdr6, up: u32, server: u32, port: u16) -> i64 {
    step::unit(to_ipv4_step(p, h, up, server, port))
}

#[inline(always)]
fn to_ipv4_step(p: &mut Tc, h: &Hdr6, up: u32, server: u32, port: u16) -> Result<(), DropReason> {
    let fail = DropReason::RewriteFailed;
    let l4 = ETH_LEN + IPV6_LEN;
    let vcf: [u8; 2] = p.load(ETH_LEN).ok_or(DropReason::Malformed)?;
    let payload: u16 = u16::from_be(p.load(ETH_LEN + 4).ok_or(DropReason::Malformed)?);
    let hops: u8 = p.load(ETH_LEN + 7).ok_or(DropReason::Malformed)?;
    if hops <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let (csum, sport_off, _) = l4_fields(h.proto, l4);
    let proto4 = if h.proto == proto::ICMPV6 {
        // Echo request: type 128 → 8; ICMPv4's checksum has no pseudo header.
        let types = (ICMPV6_ECHO_REQUEST, ICMP_ECHO);
        echo(p, csum.off, (&h.saddr, &h.daddr, payload), true, types).ok_or(fail)?;
        proto::ICMP
    } else {
        let flags = pseudo_flags(csum);
        for i in 0..4 {
            let (new_s, new_d) = match i {
                0 => (up, server),
                _ => (0, 0),
            };
            p.0.l4_csum_replace(csum.off, word(&h.saddr, i).into(), new_s.into(), flags)
                .map_err(|_| fail)?;
            p.0.l4_csum_replace(csum.off, word(&h.daddr, i).into(), new_d.into(), flags)
                .map_err(|_| fail)?;
        }
        h.proto
    };
    if h.sport != port {
        p.set_port(sport_off, h.sport, port, Some(csum))
            .ok_or(fail)?;
    }
    p.0.change_proto(ETH_P_IP.to_be(), 0).map_err(|_| fail)?;
    let tos = vcf[0] << 4 | vcf[1] >> 4;
    let ip = ipv4_header(tos, payload + IPV4_LEN as u16, hops - 1, proto4, up, server);
    p.0.store(ETH_LEN, &ip, 0).map_err(|_| fail)?;
    p.store16(12, ETH_P_IP.to_be()).ok_or(fail)
}

/// `uplink_ingress64`'s first step: the IPv4 reply of a NAT64 flow (`owns_reply`), tracked;
/// its reply entry is left in `SCRATCH6` for [`deliver`]. (Two steps, each a BPF function
/// of its own: nested, their frames would not fit the BPF stack.)
#[inline(never)]
pub fn ingress<const MODERN: bool>(p: &Tc, h: &Hdr) -> i64 {
    step::unit(ingress_step::<MODERN>(p, h))
}

#[inline(always)]
fn ingress_step<const MODERN: bool>(p: &Tc, h: &Hdr) -> Result<(), DropReason> {
    if h.l4 != ETH_LEN + IPV4_LEN || h.frag {
        return Err(DropReason::UnsupportedProtocol);
    }
    if h.proto == proto::ICMP {
        let t: u8 = p.load(h.l4).ok_or(DropReason::Malformed)?;
        if t != ICMP_ECHO_REPLY {
            return Err(DropReason::UnsupportedProtocol);
        }
    }
    let s = scratch()?;
    s.probe.key = reply_key(h);
    let f = ct::lookup(&s.probe.key, false).ok_or(DropReason::CtMiss)?;
    if !ct::track::<MODERN, _>(f, &s.probe.key, h, &mut s.e)? {
        return Err(DropReason::CtMiss);
    }
    Ok(())
}

/// `uplink_ingress64`'s second step: the packet made IPv6 from 64:ff9b::X, as the reply
/// entry [`ingress`] found says, and handed to its container.
#[inline(never)]
pub fn deliver(p: &mut Tc, h: &Hdr) -> i64 {
    step::run(|answer| deliver_step(p, h, answer))
}

#[inline(always)]
fn deliver_step(p: &mut Tc, h: &Hdr, answer: &mut i64) -> Result<(), DropReason> {
    let s = scratch()?;
    // SAFETY: a read-only copy of a value the controller writes whole.
    let ep = unsafe { ENDPOINTS6.get(s.e.dst_addr).copied() }.ok_or(DropReason::CtMiss)?;
    let net = maps::network(ep.network).ok_or(DropReason::CtMiss)?;
    to_ipv6(p, h, &s.e)?;
    p.set_macs(&ep.mac, &net.mac)
        .ok_or(DropReason::RewriteFailed)?;
    crate::stats::received6(ep.ifindex, p.len());
    step::done(answer, redirect::into_container(ep.ifindex))
}

/// Rewrites an IPv4 reply (TCP, UDP, echo reply; no options) as the IPv6 packet
/// 64:ff9b::X → the container that the flow's reply entry `e` names.
#[inline(always)]
fn to_ipv6(p: &mut Tc, h: &Hdr, e: &CtEntry6) -> Result<(), DropReason> {
    let fail = DropReason::RewriteFailed;
    let l4 = ETH_LEN + IPV4_LEN;
    let tos: u8 = p.load(ETH_LEN + 1).ok_or(DropReason::Malformed)?;
    let tot_len = u16::from_be(p.load(ETH_LEN + 2).ok_or(DropReason::Malformed)?);
    let ttl: u8 = p.load(ETH_LEN + 8).ok_or(DropReason::Malformed)?;
    if ttl <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let payload = tot_len
        .checked_sub(IPV4_LEN as u16)
        .ok_or(DropReason::Malformed)?;
    let (csum, _, dport_off) = l4_fields(h.proto, l4);
    let next = if h.proto == proto::ICMP {
        // Echo reply: type 0 → 129, and ICMPv6's pseudo header joins the checksum.
        let types = (ICMP_ECHO_REPLY, ICMPV6_ECHO_REPLY);
        echo(
            p,
            csum.off,
            (&e.src_addr, &e.dst_addr, payload),
            false,
            types,
        )
        .ok_or(fail)?;
        proto::ICMPV6
    } else {
        if h.proto == proto::UDP {
            // IPv6 has no checksum-less UDP (RFC 7915 lets a translator drop these).
            let c: u16 = p.load(csum.off).ok_or(DropReason::Malformed)?;
            if c == 0 {
                return Err(DropReason::UnsupportedProtocol);
            }
        }
        let flags = pseudo_flags(csum);
        for i in 0..4 {
            let (old_s, old_d) = match i {
                0 => (h.saddr, h.daddr),
                _ => (0, 0),
            };
            p.0.l4_csum_replace(csum.off, old_s.into(), word(&e.src_addr, i).into(), flags)
                .map_err(|_| fail)?;
            p.0.l4_csum_replace(csum.off, old_d.into(), word(&e.dst_addr, i).into(), flags)
                .map_err(|_| fail)?;
        }
        h.proto
    };
    if h.dport != e.dst_port {
        p.set_port(dport_off, h.dport, e.dst_port, Some(csum))
            .ok_or(fail)?;
    }
    p.0.change_proto(ETH_P_IPV6.to_be(), 0).map_err(|_| fail)?;
    let pl = payload.to_be_bytes();
    let head: [u8; 8] = [0x60 | tos >> 4, tos << 4, 0, 0, pl[0], pl[1], next, ttl - 1];
    p.0.store(ETH_LEN, &head, 0).map_err(|_| fail)?;
    p.0.store(ETH_LEN + 8, &e.src_addr, 0).map_err(|_| fail)?;
    p.0.store(ETH_LEN + 24, &e.dst_addr, 0).map_err(|_| fail)?;
    p.store16(12, ETH_P_IPV6.to_be()).ok_or(fail)
}
