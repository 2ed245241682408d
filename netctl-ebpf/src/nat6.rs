//! IPv6 beyond the host: masquerade (NAT66) of container flows to the uplink's IPv6 address,
//! published ports on the host's IPv6 addresses (DNAT66, the client's address kept), replies
//! and ICMPv6 errors of those flows, tracked in `CT6` by the same conntrack as IPv4.
//!
//! The host never forwards IPv6 for netctl (turning `net.ipv6.conf.all.forwarding` on would
//! stop the host's own router advertisements from configuring it): the programs route what
//! they translate themselves — a FIB lookup and a redirect out of the uplink, a redirect
//! into the container — and everything else stays where it is.

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup, bpf_sock_tuple, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR,
    },
    helpers::generated::{
        bpf_fib_lookup as fib_lookup, bpf_redirect, bpf_redirect_neigh, bpf_sk_lookup_udp,
        bpf_sk_release, bpf_skc_lookup_tcp,
    },
    macros::map,
    maps::lpm_trie::Key,
    maps::PerCpuArray,
};
use netctl_common::{
    ct::*,
    drop::DropReason,
    maps::{
        Backend6, EndpointInfo, Ip6, NetInfo, Published6, NET_MASQUERADE, NET_NAT64, NET_ROUTED6,
    },
    proto,
};
use network_types::ip::Ipv6Hdr;

use crate::{
    ct::{self, Segment},
    ipv6::{self, Hdr6},
    maps::{self, config, HOST_ADDRS6, IP6_OF, PUBLISHED6, SUBNETS6, UPLINKS6},
    packet::{L4Csum, Packet, Tc},
    parse::ETH_LEN,
    redirect,
    room::{scratch6 as scratch, Quote6},
    step,
};

const AF_INET6: u8 = 10;
const HOP_LIMIT: usize = ETH_LEN + 7;
const SADDR: usize = ETH_LEN + 8;
const DADDR: usize = ETH_LEN + 24;
/// In the namespace of the device the packet is on.
const CURRENT_NETNS: u64 = u64::MAX;

impl Segment for Hdr6 {
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn l4_absent(&self) -> bool {
        self.l4.is_none()
    }
    #[inline(always)]
    fn tcp_flags(&self) -> u8 {
        self.tcp_flags
    }
    #[inline(always)]
    fn seq(&self) -> u32 {
        self.seq
    }
    #[inline(always)]
    fn seq_end(&self) -> u32 {
        self.seq_end
    }
    #[inline(always)]
    fn ack(&self) -> u32 {
        self.ack
    }
}

/// A TCP segment that opens a connection: SYN without ACK.
#[inline(always)]
fn is_syn(h: &Hdr6) -> bool {
    h.proto == proto::TCP && h.tcp_flags & 0x12 == 0x02
}

/// The L4 checksum and where the "ports" sit. All three cover IPv6's pseudo header.
#[inline(always)]
pub fn l4_layout(proto_: u8, l4: usize) -> (L4Csum, usize, usize) {
    match proto_ {
        proto::TCP => (
            L4Csum {
                off: l4 + 16,
                pseudo: true,
                udp: false,
            },
            l4,
            l4 + 2,
        ),
        proto::UDP => (
            L4Csum {
                off: l4 + 6,
                pseudo: true,
                udp: true,
            },
            l4,
            l4 + 2,
        ),
        _ => (
            L4Csum {
                off: l4 + 2,
                pseudo: true,
                udp: false,
            },
            l4 + 4,
            l4 + 4,
        ),
    }
}

/// A checksum that covers an IPv6 address: its offset (low 32 bits) and how it is updated
/// (high 32 bits): through the L4 helper with those flags (`BPF_F_PSEUDO_HDR`: the pseudo
/// header), or plainly when 0 (a checksum over the bytes themselves, the ICMPv6 one of an
/// error quoting them). One register: a BPF function takes five arguments at most.
#[derive(Clone, Copy)]
struct Covers(u64);

impl Covers {
    fn l4(c: L4Csum) -> Covers {
        let mut flags = 4 | BPF_F_PSEUDO_HDR;
        if c.udp {
            flags |= BPF_F_MARK_MANGLED_0;
        }
        Covers(c.off as u64 | u64::from(flags) << 32)
    }

    fn plain(off: usize) -> Covers {
        Covers(off as u64)
    }
}

/// Replaces the IPv6 address at `off` and moves the checksum that covers it. A BPF function
/// of its own: called from several places, one copy of its stack.
#[inline(always)]
fn set_addr(p: &mut Tc, off: usize, old: &Ip6, new: &Ip6, c: Covers) -> Option<()> {
    (set_addr_step(p, off, old, new, c) == 0).then_some(())
}

#[inline(never)]
fn set_addr_step(p: &mut Tc, off: usize, old: &Ip6, new: &Ip6, c: Covers) -> i64 {
    let (csum, flags) = ((c.0 & 0xffff_ffff) as usize, c.0 >> 32);
    for i in 0..4 {
        let (o, n) = (word(old, i), word(new, i));
        let ok = if flags != 0 {
            p.0.l4_csum_replace(csum, u64::from(o), u64::from(n), flags)
                .is_ok()
        } else {
            p.csum32(csum, o, n).is_some()
        };
        if !ok {
            return -1;
        }
    }
    if p.0.store(off, new, 0).is_ok() {
        0
    } else {
        -1
    }
}

/// Rewrites the packet as `e` says and updates `h` to the new tuple.
#[inline(always)]
fn apply(p: &mut Tc, h: &mut Hdr6, e: &CtEntry6) -> Result<(), DropReason> {
    let fail = DropReason::RewriteFailed;
    let l4 = h.l4.ok_or(fail)?;
    let (csum, sport_off, dport_off) = l4_layout(h.proto, l4);
    if e.rewrite & REWRITE_DST != 0 {
        if h.daddr != e.dst_addr {
            set_addr(p, DADDR, &h.daddr, &e.dst_addr, Covers::l4(csum)).ok_or(fail)?;
            h.daddr = e.dst_addr;
        }
        if h.dport != e.dst_port {
            p.set_port(dport_off, h.dport, e.dst_port, Some(csum))
                .ok_or(fail)?;
            h.dport = e.dst_port;
            if h.is_echo() {
                h.sport = e.dst_port;
            }
        }
    }
    if e.rewrite & REWRITE_SRC != 0 {
        if h.saddr != e.src_addr {
            set_addr(p, SADDR, &h.saddr, &e.src_addr, Covers::l4(csum)).ok_or(fail)?;
            h.saddr = e.src_addr;
        }
        if h.sport != e.src_port {
            p.set_port(sport_off, h.sport, e.src_port, Some(csum))
                .ok_or(fail)?;
            h.sport = e.src_port;
            if h.is_echo() {
                h.dport = e.src_port;
            }
        }
    }
    Ok(())
}

/// The packet being handled, parsed (per CPU, as [`Scratch6`]; a parsed IPv6 header is
/// large for the stack).
#[map(name = "PACKET6")]
static PACKET6: PerCpuArray<Hdr6> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn packet() -> Result<&'static mut Hdr6, DropReason> {
    // SAFETY: this CPU's slot, as `scratch`.
    PACKET6
        .get_ptr_mut(0)
        .map(|s| unsafe { &mut *s })
        .ok_or(DropReason::Malformed)
}

/// This CPU's room for flow entries ([`Scratch6`]).
/// A packet of a tracked flow: recorded and translated. Returns whether it was one.
#[inline(never)]
fn tracked<const MODERN: bool>(p: &mut Tc, h: &mut Hdr6) -> i64 {
    step::run(|answer| tracked_step::<MODERN>(p, h, answer))
}

#[inline(always)]
fn tracked_step<const MODERN: bool>(
    p: &mut Tc,
    h: &mut Hdr6,
    answer: &mut i64,
) -> Result<(), DropReason> {
    let k = h.key();
    let Some(f) = ct::lookup(&k, is_syn(h)) else {
        return Ok(());
    };
    let s = scratch()?;
    if !ct::track::<MODERN, _>(f, &k, h, &mut s.e)? {
        return Ok(());
    }
    apply(p, h, &s.e)?;
    step::done(answer, true)
}

/// Decrements the hop limit as a router does; the packet is dropped when it runs out.
#[inline(always)]
fn dec_hop_limit(p: &mut Tc) -> Result<(), DropReason> {
    let hops: u8 = p.load(HOP_LIMIT).ok_or(DropReason::Malformed)?;
    if hops <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    p.0.store(HOP_LIMIT, &(hops - 1), 0)
        .map_err(|_| DropReason::RewriteFailed)
}

/// Where the host's routing table sends `h` (as a packet arriving on bridge `bridge`, whose
/// per-interface forwarding the controller turns on: the FIB helper asks for it): an uplink
/// with an IPv6 address, and that address; the route's MACs when the neighbour is known.
#[inline(always)]
fn route(
    p: &Tc,
    h: &Hdr6,
    bridge: u32,
    fib: &mut bpf_fib_lookup,
) -> Result<(bool, Ip6), DropReason> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid request to fill in.
    *fib = unsafe { core::mem::zeroed() };
    fib.family = AF_INET6;
    fib.l4_protocol = h.proto;
    fib.sport = h.sport;
    fib.dport = h.dport;
    fib.ifindex = bridge;
    // SAFETY: plain byte copies into the ipv6 arms.
    unsafe {
        fib.__bindgen_anon_3.ipv6_src = core::mem::transmute::<Ip6, [u32; 4]>(h.saddr);
        fib.__bindgen_anon_4.ipv6_dst = core::mem::transmute::<Ip6, [u32; 4]>(h.daddr);
    }
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
    // SAFETY: a read-only copy of a value the controller writes whole.
    let addr = unsafe { UPLINKS6.get(fib.ifindex).copied() }.ok_or(DropReason::Ipv6Unrouted)?;
    Ok((known, addr))
}

/// Out of the uplink the route chose, as a router would send it.
#[inline(always)]
fn send(p: &mut Tc, fib: &bpf_fib_lookup, known: bool) -> Result<i32, DropReason> {
    dec_hop_limit(p)?;
    redirect_out(p, fib, known)
}

/// Out of the uplink the route chose, the hop limit (or TTL) already set.
#[inline(always)]
pub fn redirect_out(p: &mut Tc, fib: &bpf_fib_lookup, known: bool) -> Result<i32, DropReason> {
    if known {
        p.set_macs(&fib.dmac, &fib.smac)
            .ok_or(DropReason::RewriteFailed)?;
        // SAFETY: helper call with plain values.
        return Ok(unsafe { bpf_redirect(fib.ifindex, 0) } as i32);
    }
    // No neighbour entry yet: the kernel resolves it (and queues the packet meanwhile).
    // SAFETY: helper call; no next-hop parameters (the kernel routes by the destination).
    Ok(unsafe { bpf_redirect_neigh(fib.ifindex, core::ptr::null_mut(), 0, 0) } as i32)
}

/// Into the container that owns `h.daddr`, through its veth.
#[inline(never)]
fn deliver(p: &mut Tc, h: &Hdr6) -> i64 {
    step::run(|answer| deliver_step(p, h, answer))
}

#[inline(always)]
fn deliver_step(p: &mut Tc, h: &Hdr6, answer: &mut i64) -> Result<(), DropReason> {
    let ep = maps::endpoint6(&h.daddr).ok_or(DropReason::CtMiss)?;
    let net = maps::network(ep.network).ok_or(DropReason::CtMiss)?;
    dec_hop_limit(p)?;
    p.set_macs(&ep.mac, &net.mac)
        .ok_or(DropReason::RewriteFailed)?;
    crate::stats::received6(ep.ifindex, p.len());
    step::done(answer, redirect::into_container(ep.ifindex))
}

/// What [`egress`] answers for a packet NAT64 translates (`nat64::egress`, called next with
/// the packet parsed in `PACKET6`: a call level of its own would not fit the BPF stack).
pub const TO_NAT64: i64 = i64::MAX - 1;

/// A container's IPv6 packet for beyond the host (`from_container` decided it may leave):
/// a packet of a tracked flow is translated; a new flow is masqueraded to the uplink's
/// address (or tracked untranslated on a network without masquerade). Either way it leaves
/// through the uplink the host routes it to. (This and the steps below are BPF functions of
/// their own, `inline(never)`: each step's stack frame is gone before the next one's.)
#[inline(never)]
pub fn egress<const MODERN: bool>(p: &mut Tc, ep: &EndpointInfo, net: &NetInfo) -> i64 {
    step::run(|answer| egress_step::<MODERN>(p, ep, net, answer))
}

#[inline(always)]
fn egress_step<const MODERN: bool>(
    p: &mut Tc,
    ep: &EndpointInfo,
    net: &NetInfo,
    answer: &mut i64,
) -> Result<(), DropReason> {
    let h = packet()?;
    step::back(ipv6::parse_into(p, h))?;
    if MODERN && net.flags & NET_NAT64 != 0 && netctl_common::maps::is_nat64(&h.daddr) {
        return step::done(answer, TO_NAT64);
    }
    if h.is_error() {
        if !step::yes(icmp_error::<MODERN>(p, h, false))? {
            return Err(DropReason::Ipv6Unrouted);
        }
    } else {
        if !h.natable() {
            return Err(match h.fragmented {
                true => DropReason::Fragment,
                false => DropReason::UnsupportedProtocol,
            });
        }
        if !step::yes(tracked::<MODERN>(p, h))? {
            let masquerade = net.flags & (NET_MASQUERADE | NET_ROUTED6) == NET_MASQUERADE;
            step::back(new_flow::<MODERN>(p, h, ep.network, masquerade))?;
        }
    }
    step::done(answer, step::code(out(p, h, ep.network))?)
}

/// Starts the flow of a container's first packet to beyond the host: B:bp → X:xp leaves as
/// U:np → X:xp and replies X:xp → U:np come back to B:bp; without masquerade it is tracked
/// as it is, so its replies get in.
#[inline(never)]
fn new_flow<const MODERN: bool>(p: &mut Tc, h: &mut Hdr6, bridge: u32, masquerade: bool) -> i64 {
    step::unit(new_flow_step::<MODERN>(p, h, bridge, masquerade))
}

#[inline(always)]
fn new_flow_step<const MODERN: bool>(
    p: &mut Tc,
    h: &mut Hdr6,
    bridge: u32,
    masquerade: bool,
) -> Result<(), DropReason> {
    let s = scratch()?;
    // Only flows that can leave are tracked.
    let (_, up) = route(p, h, bridge, &mut s.fib)?;
    // A TCP segment that opens nothing belongs to a connection whose flow was lost.
    if h.proto == proto::TCP && !is_syn(h) {
        return Err(DropReason::CtMiss);
    }
    let orig_key = h.key();
    if !masquerade {
        let reply_key = orig_key.reversed();
        ct::open(&mut s.orig, KIND_ROUTED, reply_key, h);
        ct::init(&mut s.reply, KIND_ROUTED, CT_REPLY, orig_key);
        return ct::insert_pair(&orig_key, &mut s.orig, &reply_key, &s.reply);
    }
    s.probe.key = CtKey6 {
        saddr: h.daddr,
        daddr: up,
        sport: h.dport,
        dport: 0,
        proto: h.proto,
        _pad: [0; 3],
    };
    ct::init(&mut s.probe.reply, KIND_SNAT, CT_REPLY, orig_key);
    s.probe.reply.rewrite = REWRITE_DST;
    s.probe.reply.dst_addr = h.saddr;
    s.probe.reply.dst_port = h.sport;
    let cfg = config();
    let port = ct::alloc_port::<MODERN, _>(&mut s.probe, cfg.nat_port_min, cfg.nat_port_max)?;
    ct::open(&mut s.orig, KIND_SNAT, s.probe.key, h);
    s.orig.rewrite = REWRITE_SRC;
    s.orig.src_addr = up;
    s.orig.src_port = port;
    ct::insert_orig(&orig_key, &mut s.orig, &s.probe.key)?;
    apply(p, h, &s.orig)
}

/// Out of the uplink the host routes `h` to.
#[inline(never)]
fn out(p: &mut Tc, h: &Hdr6, bridge: u32) -> i64 {
    step::run(|answer| {
        let s = scratch()?;
        let (known, _) = route(p, h, bridge, &mut s.fib)?;
        step::done(answer, send(p, &s.fib, known)?)
    })
}

/// Uplink ingress, IPv6: replies of masqueraded flows and packets of published-port flows
/// go to their container (new published-port flows start here); a container's or the
/// host's address as the source is forged; anything else for a container has no way in.
/// The rest is the host's own and passes untouched (None), unparsed: netctl judges only
/// what concerns its containers.
#[inline(never)]
pub fn ingress<const MODERN: bool>(p: &mut Tc, ifindex: u32) -> i64 {
    // -1 - reason for a drop, a redirect code, or `step::PASS`: passes untouched.
    step::run(|answer| ingress_step::<MODERN>(p, ifindex, answer))
}

#[inline(always)]
fn ingress_step<const MODERN: bool>(
    p: &mut Tc,
    ifindex: u32,
    answer: &mut i64,
) -> Result<(), DropReason> {
    *answer = step::PASS;
    // Addresses as u128 here: compared and kept whole, not byte by byte.
    let Some(up) = UPLINKS6.get_ptr(ifindex) else {
        return Ok(()); // no IPv6 of netctl's on this uplink
    };
    // SAFETY: map value pointer, valid for this program run, 8-byte aligned: two words
    // (a 16-byte array would be read and kept byte by byte).
    let up = unsafe { *(up as *const u128) };
    let (Some(saddr), Some(daddr)) = (p.load::<u128>(SADDR), p.load::<u128>(DADDR)) else {
        return Ok(());
    };
    if maps::endpoint6(&saddr.to_ne_bytes()).is_some() {
        return Err(DropReason::Spoofed);
    }
    // Values read, not just pointers tested: the compiler would OR two map pointers
    // together, which the verifier refuses.
    // (A bridge ifindex and the host map's 1 are never 0.)
    let for_container = SUBNETS6
        .get(Key::new(128, daddr.to_ne_bytes()))
        .map_or(0, |v| *v)
        != 0;
    // SAFETY: a read-only copy.
    let for_host =
        daddr == up || unsafe { HOST_ADDRS6.get(daddr.to_ne_bytes()).map_or(0, |v| *v) } != 0;
    if !for_container && !for_host {
        return Ok(());
    }
    let h = packet()?;
    match step::back(ipv6::parse_into(p, h)) {
        Ok(_) => {}
        Err(e) if for_container => return Err(e),
        Err(_) => return Ok(()),
    }
    let ours = if h.is_error() {
        step::yes(icmp_error::<MODERN>(p, h, true))?
    } else {
        h.natable()
            && (step::yes(tracked::<MODERN>(p, h))?
                || for_host && step::yes(dnat::<MODERN>(p, h))?
                || for_container && step::yes(routed_in(h))?)
    };
    if ours {
        return step::done(answer, step::code(deliver(p, h))?);
    }
    if for_container {
        return Err(DropReason::NoWayIn);
    }
    if daddr == up && lost_nat_reply(p, h) {
        return Err(DropReason::CtMiss);
    }
    Ok(())
}

/// The port published at `h`'s destination (a host address) that `h` (TCP or UDP) is for,
/// its backend and the backend's IPv6 address (None: not published, or the backend has no
/// IPv6).
#[inline(always)]
fn published_backend(h: &Hdr6) -> Option<(Backend6, Ip6)> {
    // As IPv4's: whoever puts ::1 in a packet never reaches what is published on it (that is
    // for the host's own processes, through the socket programs).
    const LOOPBACK: u128 = u128::from_ne_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    if h.proto != proto::TCP && h.proto != proto::UDP || u128::from_ne_bytes(h.daddr) == LOOPBACK {
        return None;
    }
    let backend = maps::published6(&h.daddr, h.dport, h.proto)?;
    let a = &backend.addr;
    if a[..12] != [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] {
        return Some((backend, backend.addr)); // an IPv6-only backend
    }
    let v4 = u32::from_ne_bytes([a[12], a[13], a[14], a[15]]);
    // SAFETY: a read-only copy of a value the controller writes whole.
    let addr = unsafe { IP6_OF.get(v4).copied() }?;
    Some((backend, addr))
}

/// A new connection to a port published on every host address: to the backend's IPv6
/// address (client C:cp → H:hp becomes C:cp → B:bp; replies leave as H:hp → C:cp).
#[inline(never)]
fn dnat<const MODERN: bool>(p: &mut Tc, h: &mut Hdr6) -> i64 {
    step::run(|answer| dnat_step::<MODERN>(p, h, answer))
}

#[inline(always)]
fn dnat_step<const MODERN: bool>(
    p: &mut Tc,
    h: &mut Hdr6,
    answer: &mut i64,
) -> Result<(), DropReason> {
    let Some((backend, addr)) = published_backend(h) else {
        return Ok(());
    };
    let orig_key = h.key();
    let reply_key = CtKey6 {
        saddr: addr,
        daddr: h.saddr,
        sport: backend.port,
        dport: h.sport,
        proto: h.proto,
        _pad: [0; 3],
    };
    // As IPv4's: a TCP SYN, or a UDP datagram no host socket would receive.
    let starts = match h.proto {
        proto::TCP => is_syn(h),
        _ => !socket_owns(p, h),
    };
    let s = scratch()?;
    if starts {
        ct::open(&mut s.orig, KIND_DNAT, reply_key, h);
        s.orig.rewrite = REWRITE_DST;
        s.orig.dst_addr = addr;
        s.orig.dst_port = backend.port;
        ct::init(&mut s.reply, KIND_DNAT, CT_REPLY, orig_key);
        s.reply.rewrite = REWRITE_SRC;
        s.reply.src_addr = h.daddr;
        s.reply.src_port = h.dport;
        maps::count_hit6(&h.daddr, h.dport, h.proto);
        ct::insert_pair(&orig_key, &mut s.orig, &reply_key, &s.reply)?;
    } else if !ct::adopt_orphan(&orig_key, &reply_key, &mut s.orig) {
        return Ok(());
    }
    apply(p, h, &s.orig)?;
    step::done(answer, true)
}

/// A container's packet to a host IPv6 address: a port published there (on every address)
/// is reached as from outside — both ends rewritten, to the backend's IPv6 address from its
/// network's IPv6 gateway, so the replies come back through here — and handed to the
/// backend's veth; a packet of such a flow (either way) likewise. Anything else is the
/// host's (`step::PASS`).
#[inline(never)]
pub fn hairpin<const MODERN: bool>(p: &mut Tc) -> i64 {
    step::run(|answer| {
        *answer = step::PASS;
        let h = packet()?;
        step::back(ipv6::parse_into(p, h))?;
        let s = scratch()?;
        let ours = if step::yes(tracked::<MODERN>(p, h))? {
            s.e.kind == KIND_HAIRPIN
        } else {
            step::yes(hairpin_new::<MODERN>(p, h))?
        };
        if ours {
            *answer = step::back(deliver(p, h))?;
        }
        Ok(())
    })
}

/// A new hairpin flow: A:ap → H:hp becomes G:np → B:bp; replies B:bp → G:np become
/// H:hp → A:ap.
#[inline(never)]
fn hairpin_new<const MODERN: bool>(p: &mut Tc, h: &mut Hdr6) -> i64 {
    step::run(|answer| hairpin_new_step::<MODERN>(p, h, answer))
}

#[inline(always)]
fn hairpin_new_step<const MODERN: bool>(
    p: &mut Tc,
    h: &mut Hdr6,
    answer: &mut i64,
) -> Result<(), DropReason> {
    let Some((backend, addr)) = published_backend(h) else {
        return Ok(());
    };
    let Some(bnet) = maps::endpoint6(&addr).and_then(|ep| maps::network(ep.network)) else {
        return Ok(());
    };
    // As for masquerade: a new source port cannot revive a lost connection.
    if h.proto == proto::TCP && !is_syn(h) {
        return Err(DropReason::CtMiss);
    }
    let s = scratch()?;
    let orig_key = h.key();
    s.probe.key = CtKey6 {
        saddr: addr,
        daddr: bnet.gateway6,
        sport: backend.port,
        dport: 0,
        proto: h.proto,
        _pad: [0; 3],
    };
    ct::init(&mut s.probe.reply, KIND_HAIRPIN, CT_REPLY, orig_key);
    s.probe.reply.rewrite = REWRITE_SRC | REWRITE_DST;
    s.probe.reply.src_addr = h.daddr;
    s.probe.reply.src_port = h.dport;
    s.probe.reply.dst_addr = h.saddr;
    s.probe.reply.dst_port = h.sport;
    let cfg = config();
    let np = ct::alloc_port::<MODERN, _>(&mut s.probe, cfg.nat_port_min, cfg.nat_port_max)?;
    ct::open(&mut s.orig, KIND_HAIRPIN, s.probe.key, h);
    s.orig.rewrite = REWRITE_SRC | REWRITE_DST;
    s.orig.src_addr = bnet.gateway6;
    s.orig.src_port = np;
    s.orig.dst_addr = addr;
    s.orig.dst_port = backend.port;
    ct::insert_orig(&orig_key, &mut s.orig, &s.probe.key)?;
    maps::count_hit6(&h.daddr, h.dport, h.proto);
    apply(p, h, &s.orig)?;
    step::done(answer, true)
}

/// From beyond the host to a container of a routed IPv6 network: a new connection to a
/// port it publishes (TCP SYN, a UDP datagram) or an echo request opens a flow, tracked as
/// it is; nothing else gets in.
#[inline(never)]
fn routed_in(h: &mut Hdr6) -> i64 {
    step::run(|answer| routed_in_step(h, answer))
}

#[inline(always)]
fn routed_in_step(h: &mut Hdr6, answer: &mut i64) -> Result<(), DropReason> {
    let Some(ep) = maps::endpoint6(&h.daddr) else {
        return Ok(());
    };
    let routed = maps::network(ep.network).is_some_and(|n| n.flags & NET_ROUTED6 != 0);
    if !routed {
        return Ok(());
    }
    let opens = match h.proto {
        proto::TCP => is_syn(h) && published6(h),
        proto::UDP => published6(h),
        _ => h.icmp_type == ipv6::ECHO_REQUEST,
    };
    if !opens {
        return Ok(());
    }
    let s = scratch()?;
    let orig_key = h.key();
    let reply_key = orig_key.reversed();
    ct::open(&mut s.orig, KIND_ROUTED_IN, reply_key, h);
    ct::init(&mut s.reply, KIND_ROUTED_IN, CT_REPLY, orig_key);
    ct::insert_pair(&orig_key, &mut s.orig, &reply_key, &s.reply)?;
    step::done(answer, true)
}

/// The container `h` is for publishes its destination port.
#[inline(always)]
fn published6(h: &Hdr6) -> bool {
    let key = Published6 {
        addr: h.daddr,
        port: h.dport,
        proto: h.proto,
        _pad: 0,
    };
    // SAFETY: a read-only copy of a value the controller writes whole.
    unsafe { PUBLISHED6.get(key).copied() }.is_some_and(|v| v != 0)
}

/// A packet for a NAT source port of the uplink's address that no flow and no host socket
/// owns: the reply of a masqueraded flow that was lost (see `uplink::lost_nat_reply`).
#[inline(never)]
fn lost_nat_reply(p: &Tc, h: &Hdr6) -> bool {
    if h.proto != proto::UDP && (h.proto != proto::TCP || is_syn(h)) || !h.natable() {
        return false;
    }
    let cfg = config();
    let port = u16::from_be(h.dport);
    (cfg.nat_port_min..=cfg.nat_port_max).contains(&port) && !socket_owns(p, h)
}

/// A socket of the host would receive the packet.
#[inline(always)]
fn socket_owns(p: &Tc, h: &Hdr6) -> bool {
    // SAFETY: an all-zero tuple is valid; the ipv6 arm is the one the size below selects.
    let mut t: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    unsafe {
        t.__bindgen_anon_1.ipv6.saddr = core::mem::transmute::<Ip6, [u32; 4]>(h.saddr);
        t.__bindgen_anon_1.ipv6.daddr = core::mem::transmute::<Ip6, [u32; 4]>(h.daddr);
        t.__bindgen_anon_1.ipv6.sport = h.sport;
        t.__bindgen_anon_1.ipv6.dport = h.dport;
    }
    let size = core::mem::size_of::<[u32; 9]>() as u32; // the ipv6 arm
                                                        // SAFETY: helper calls on the program's context with a tuple on the stack; a socket
                                                        // found is released before returning.
    let sk = unsafe {
        match h.proto {
            proto::TCP => bpf_skc_lookup_tcp(p.ctx(), &mut t, size, CURRENT_NETNS, 0),
            _ => bpf_sk_lookup_udp(p.ctx(), &mut t, size, CURRENT_NETNS, 0),
        }
    };
    if sk.is_null() {
        return false;
    }
    unsafe { bpf_sk_release(sk.cast()) };
    true
}

/// An ICMPv6 error about a tracked flow, translated as the flow's packets in this direction
/// are: `inbound` (on the uplink: errors about what a container sent, back to it) or out of
/// a container (about what it received). The outer address, the quoted packet's address
/// and port, and the checksums that cover them (ICMPv6's over both, the quoted L4 one).
/// Returns whether the error belongs to such a flow.
#[inline(never)]
fn icmp_error<const MODERN: bool>(p: &mut Tc, h: &mut Hdr6, inbound: bool) -> i64 {
    step::run(|answer| {
        let s = scratch()?;
        if step::yes(quoted_flow(p, h, inbound, &mut s.quote))? {
            *answer = step::back(rewrite_error(p, h, inbound, &s.quote))?;
        }
        Ok(())
    })
}

/// Reads the quote of error `h` into `q` and finds its flow. False when it quotes none this
/// hook translates.
#[inline(never)]
fn quoted_flow(p: &Tc, h: &Hdr6, inbound: bool, q: &mut Quote6) -> i64 {
    step::run(|answer| quoted_flow_step(p, h, inbound, q, answer))
}

#[inline(always)]
fn quoted_flow_step(
    p: &Tc,
    h: &Hdr6,
    inbound: bool,
    q: &mut Quote6,
    answer: &mut i64,
) -> Result<(), DropReason> {
    let Some(l4) = h.l4 else {
        return Ok(());
    };
    if h.fragmented {
        return Ok(());
    }
    let inner = l4 + 8;
    q.proto = p.load::<u8>(inner + 6).ok_or(DropReason::Malformed)?;
    if q.proto != proto::TCP && q.proto != proto::UDP && q.proto != proto::ICMPV6 {
        return Ok(());
    }
    q.src = p.load(inner + 8).ok_or(DropReason::Malformed)?;
    q.dst = p.load(inner + 24).ok_or(DropReason::Malformed)?;
    let (_, sport_off, dport_off) = l4_layout(q.proto, inner + Ipv6Hdr::LEN);
    let (Some(sport), Some(dport)) = (p.load::<u16>(sport_off), p.load::<u16>(dport_off)) else {
        return Ok(());
    };
    q.sport = sport;
    q.dport = dport;
    // An error goes back to the sender of the packet it quotes.
    if h.daddr != q.src {
        return Ok(());
    }
    // The quoted packet went the other way: its reverse is a packet of this direction.
    let k = CtKey6 {
        saddr: q.dst,
        daddr: q.src,
        sport: q.dport,
        dport: q.sport,
        proto: q.proto,
        _pad: [0; 3],
    };
    let Some(f) = ct::lookup(&k, false) else {
        return Ok(());
    };
    // SAFETY: map value pointer, valid for this program run (read in place: an IPv6 entry
    // is large for the stack).
    let e = unsafe { &*f.e };
    if e.kind == KIND_HAIRPIN {
        return Ok(());
    }
    // Inbound errors quote what the container sent: its source is rewritten back. Outbound
    // ones quote what it received: its destination is rewritten to what the flow shows.
    if inbound {
        q.rewrite = e.rewrite & REWRITE_DST;
        q.addr = e.dst_addr;
        q.port = e.dst_port;
    } else {
        q.rewrite = e.rewrite & REWRITE_SRC;
        q.addr = e.src_addr;
        q.port = e.src_port;
    }
    step::done(answer, true)
}

/// Translates error `h` as `q` says (nothing for a flow that is routed untranslated).
#[inline(never)]
fn rewrite_error(p: &mut Tc, h: &mut Hdr6, inbound: bool, q: &Quote6) -> i64 {
    step::run(|answer| rewrite_error_step(p, h, inbound, q, answer))
}

#[inline(always)]
fn rewrite_error_step(
    p: &mut Tc,
    h: &mut Hdr6,
    inbound: bool,
    q: &Quote6,
    answer: &mut i64,
) -> Result<(), DropReason> {
    if q.rewrite == 0 {
        return step::done(answer, true);
    }
    let fail = DropReason::RewriteFailed;
    let l4 = h.l4.ok_or(fail)?;
    let icmp = l4 + 2;
    let outer = Covers::l4(L4Csum {
        off: icmp,
        pseudo: true,
        udp: false,
    });
    if inbound {
        // To the flow's real source (the quoted packet's source, rewritten back).
        set_addr(p, DADDR, &h.daddr, &q.addr, outer).ok_or(fail)?;
        h.daddr = q.addr;
    } else if h.saddr == q.dst {
        // From the quoted packet's destination itself (not a router on the way).
        set_addr(p, SADDR, &h.saddr, &q.addr, outer).ok_or(fail)?;
        h.saddr = q.addr;
    }
    let inner = l4 + 8;
    let (q_csum, q_sport_off, q_dport_off) = l4_layout(q.proto, inner + Ipv6Hdr::LEN);
    let (addr_off, old, port_off, old_port) = if inbound {
        (inner + 8, &q.src, q_sport_off, q.sport)
    } else {
        (inner + 24, &q.dst, q_dport_off, q.dport)
    };
    // The quoted L4 checksum, when quoted (8 bytes of TCP's header do not reach it), follows
    // its pseudo header and port; UDP's "no checksum" stays zero.
    if let Some(before) = p.load::<u16>(q_csum.off) {
        if !(q_csum.udp && before == 0) {
            for i in 0..4 {
                p.csum32(q_csum.off, word(old, i), word(&q.addr, i))
                    .ok_or(fail)?;
            }
            p.csum16(q_csum.off, old_port, q.port).ok_or(fail)?;
            let after: u16 = p.load(q_csum.off).ok_or(fail)?;
            p.csum16(icmp, before, after).ok_or(fail)?;
        }
    }
    if q.port != old_port {
        p.store16(port_off, q.port).ok_or(fail)?;
        p.csum16(icmp, old_port, q.port).ok_or(fail)?;
    }
    set_addr(p, addr_off, old, &q.addr, Covers::plain(icmp)).ok_or(fail)?;
    step::done(answer, true)
}

#[inline(always)]
fn word(a: &Ip6, i: usize) -> u32 {
    u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
}
